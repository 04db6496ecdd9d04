//! Request heads: the request line, the header fields the daemon uses, and body framing
//! (RFC 9112 §2–§7, docs/protocol.md §1.3, §2).
//!
//! Decisions (docs/protocol.md §14):
//! - Lines of the head may end in CRLF or a bare LF (RFC 9112 §2.2 allows it, httparse does it,
//!   and the framing of the head does not depend on it); chunked framing stays strict (`body`).
//! - Empty lines before the request line are skipped; they count towards `MAX_HEAD_BYTES`.
//! - Targets: origin-form (`/p?q`); `*` with OPTIONS only; absolute-form with an `http` or
//!   `https` scheme is accepted and its path and query are used (RFC 9112 §3.2.2 says a server
//!   must accept it); its authority is ignored. Anything else is `BadTarget`. Non-ASCII bytes
//!   in a target are accepted when they are UTF-8 (httparse's rule); no decoding happens here.
//! - `Host`, `Content-Type`, `Authorization`, `Origin`, `Sec-WebSocket-Key` and
//!   `Sec-WebSocket-Version` must appear at most once (`DuplicateHeader`), so no two parts of
//!   the daemon can read different values. `Accept` may repeat; the first one is reported.
//! - `Transfer-Encoding` in an HTTP/1.0 request is refused (RFC 9112 §6.1: faulty framing).
//! - `Expect` values other than `100-continue` are ignored, as is `100-continue` from an
//!   HTTP/1.0 client (RFC 9110 §10.1.1).
//! - A WebSocket upgrade needs HTTP/1.1 (RFC 6455 §4.1), so `upgrade_websocket` is false for 1.0.
//! - The request line is checked in byte order and its first violation wins, so the answer does
//!   not depend on how the bytes were split: a bad byte before the 8193rd target byte is 400,
//!   not 414; 505 is decided only at the line's end. `MissingVersion` needs a non-empty target
//!   (`GET \r\n` is `Malformed`); invalid UTF-8 in the target is `Malformed` at the byte that
//!   makes it invalid.

use std::borrow::Cow;

use super::error::HttpError;
use crate::wire::ascii::{hex_value, is_tchar};
use crate::wire::limits::{MAX_HEADERS, MAX_HEAD_BYTES, MAX_TARGET_BYTES};

/// A request method; methods the daemon never serves are `Other` (routing answers 405 or 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `OPTIONS`.
    Options,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `PATCH`.
    Patch,
    /// Any other (syntactically valid) method token; method names are case-sensitive.
    Other,
}

impl Method {
    /// Maps a method token, case-sensitively as RFC 9110 §9.1 requires.
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "OPTIONS" => Self::Options,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "PATCH" => Self::Patch,
            _ => Self::Other,
        }
    }
}

/// The HTTP version of a request; others are refused with 505 before a head exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body (a POST gets 411).
    None,
    /// `Content-Length: n` (possibly 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`; decode with `body::ChunkedDecoder`.
    Chunked,
}

/// The facts of one request head, borrowing from the connection's read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'b> {
    /// The method.
    pub method: Method,
    /// The request target as sent.
    pub target: &'b str,
    /// The target's path (up to `?`), not decoded; `*` for `OPTIONS *`.
    pub path: &'b str,
    /// The target's query (after the first `?`), not decoded.
    pub query: Option<&'b str>,
    /// The version of the request line.
    pub version: Version,
    /// How the body is delimited.
    pub body: BodyFraming,
    /// HTTP/1.1: unless `Connection: close`; HTTP/1.0: only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (case-insensitive) on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// A `Host` field is present (possibly empty).
    pub has_host: bool,
    /// The `Host` value.
    pub host: Option<&'b [u8]>,
    /// The `Content-Type` value.
    pub content_type: Option<&'b [u8]>,
    /// The `Origin` value.
    pub origin: Option<&'b [u8]>,
    /// The `Authorization` value.
    pub authorization: Option<&'b [u8]>,
    /// The first `Accept` value.
    pub accept: Option<&'b [u8]>,
    /// HTTP/1.1, `Upgrade` has the token `websocket` and `Connection` the token `upgrade`.
    pub upgrade_websocket: bool,
    /// The `Sec-WebSocket-Key` value.
    pub ws_key: Option<&'b [u8]>,
    /// The `Sec-WebSocket-Version` value.
    pub ws_version: Option<&'b [u8]>,
}

/// The answer of `parse_head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadStatus<'b> {
    /// A whole head; the body (if any) starts at `consumed`.
    Complete {
        /// The head's facts.
        head: RequestHead<'b>,
        /// Bytes of the buffer the head took, leading empty lines included.
        consumed: usize,
    },
    /// More bytes are needed; the buffer holds less than `MAX_HEAD_BYTES`.
    Partial,
}

/// Parses one request head from the front of `buf`.
///
/// The answer does not depend on how the bytes arrived: an error is returned only once every
/// completion of `buf` gives that same error, so a caller that parses again after each read
/// answers a request cut in pieces as it would answer it whole. Until then it is `Partial`.
///
/// Never asks for more than `MAX_HEAD_BYTES`: a buffer that long without the end of the head
/// is `HeadTooLarge`. A target longer than `MAX_TARGET_BYTES` is `UriTooLong` as soon as that
/// is certain, before any 431.
pub fn parse_head(buf: &[u8]) -> Result<HeadStatus<'_>, HttpError> {
    let window = buf.get(..MAX_HEAD_BYTES).unwrap_or(buf);
    // A head of exactly MAX_HEAD_BYTES ends inside the window; no end there means a longer head.
    let incomplete = if buf.len() >= MAX_HEAD_BYTES {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(HeadStatus::Partial)
    };
    // httparse stops at the first bad byte of an unfinished request line, before the bytes that
    // would tell 400 from 414 or 505 have arrived; only a whole, valid line goes on to it.
    if !check_request_line(window)? {
        return incomplete;
    }

    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(window) {
        Ok(httparse::Status::Complete(consumed)) => {
            let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version)
            else {
                return Err(HttpError::Malformed);
            };
            let version = if minor == 0 {
                Version::Http10
            } else {
                Version::Http11
            };
            let head = build_head(Method::from_token(method), target, version, req.headers)?;
            Ok(HeadStatus::Complete { head, consumed })
        }
        Ok(httparse::Status::Partial) => incomplete,
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(_) => Err(HttpError::Malformed),
    }
}

/// Checks the request line left to right (method, target, version, line end) with httparse's
/// byte rules, adding what httparse cannot tell: 414 for a long target, 505 for a well-formed
/// version other than 1.0/1.1, a missing version. `Ok(true)`: a whole, valid line (HTTP/1.0 or
/// 1.1); `Ok(false)`: the bytes so far could still end either way.
///
/// Each violation is reported at the byte where it becomes certain, whatever follows, and
/// nothing after the first violation is looked at: a later byte never changes an answer.
fn check_request_line(window: &[u8]) -> Result<bool, HttpError> {
    let Some(start) = skip_empty_lines(window)? else {
        return Ok(false);
    };
    let line = window.get(start..).unwrap_or_default();
    let Some(after_method) = scan_method(line)? else {
        return Ok(false);
    };
    let Some(after_target) = scan_target(after_method)? else {
        return Ok(false);
    };
    scan_version(after_target)
}

/// Offset of the request line after leading empty lines; `None` when the buffer ends first.
fn skip_empty_lines(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    let mut i = 0;
    loop {
        match (buf.get(i), buf.get(i + 1)) {
            (Some(b'\n'), _) => i += 1,
            (Some(b'\r'), Some(b'\n')) => i += 2,
            (Some(b'\r'), Some(_)) => return Err(HttpError::Malformed),
            (Some(b'\r'), None) | (None, _) => return Ok(None),
            (Some(_), _) => return Ok(Some(i)),
        }
    }
}

/// The method: one or more `tchar`s and a space. Returns what follows the space.
fn scan_method(line: &[u8]) -> Result<Option<&[u8]>, HttpError> {
    match line.iter().position(|&b| !is_tchar(b)) {
        None => Ok(None),
        Some(end) if end > 0 && line.get(end) == Some(&b' ') => Ok(line.get(end + 1..)),
        Some(_) => Err(HttpError::Malformed),
    }
}

/// The target: httparse's target bytes forming UTF-8, at most `MAX_TARGET_BYTES`, then a
/// space. Returns what follows the space.
///
/// Only the first `MAX_TARGET_BYTES + 1` bytes are looked at: by then the target is too long
/// (414) unless one of them already made the line malformed.
fn scan_target(rest: &[u8]) -> Result<Option<&[u8]>, HttpError> {
    let region = rest.get(..=MAX_TARGET_BYTES).unwrap_or(rest);
    let end = region.iter().position(|&b| !is_target_byte(b));
    let target = region
        .get(..end.unwrap_or(region.len()))
        .unwrap_or_default();
    if let Err(e) = std::str::from_utf8(target) {
        // An invalid sequence, or one cut short by the byte after the target; a sequence cut
        // short by the end of the buffer may still be completed.
        if e.error_len().is_some() || end.is_some() {
            return Err(HttpError::Malformed);
        }
    }
    let Some(end) = end else {
        return if target.len() > MAX_TARGET_BYTES {
            Err(HttpError::UriTooLong)
        } else {
            Ok(None)
        };
    };
    if end == 0 {
        // No target at all (or two spaces after the method): not an HTTP/0.9 line either.
        return Err(HttpError::Malformed);
    }
    let after = rest.get(end + 1..).unwrap_or_default();
    match (rest.get(end), after.first()) {
        (Some(b' '), _) => Ok(Some(after)),
        (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => Err(HttpError::MissingVersion),
        (Some(b'\r'), None) => Ok(None),
        _ => Err(HttpError::Malformed),
    }
}

/// httparse's target bytes: visible ASCII and any byte >= 0x80 (UTF-8 is checked apart).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// The shapes of a version and its line end: `HTTP/` DIGIT [ `.` DIGIT ] (RFC 9112 §2.3; the
/// bare `HTTP/2` and `HTTP/3` count too), then CRLF or a bare LF. `#` stands for a digit.
const VERSION_SHAPES: [&[u8]; 4] = [b"HTTP/#\n", b"HTTP/#\r\n", b"HTTP/#.#\n", b"HTTP/#.#\r\n"];

/// The version and the line end. `Ok(true)` for HTTP/1.0 and 1.1; another well-formed version
/// is `VersionNotSupported`, decided only once its line has ended.
fn scan_version(rest: &[u8]) -> Result<bool, HttpError> {
    let mut may_fit = false;
    for shape in VERSION_SHAPES {
        let fits = shape
            .iter()
            .zip(rest)
            .all(|(&s, &b)| s == b || (s == b'#' && b.is_ascii_digit()));
        if !fits {
            continue;
        }
        if rest.len() < shape.len() {
            may_fit = true;
            continue;
        }
        let number = shape
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .and_then(|eol| rest.get(b"HTTP/".len()..eol));
        return match number {
            Some(b"1.0" | b"1.1") => Ok(true),
            _ => Err(HttpError::VersionNotSupported),
        };
    }
    if may_fit {
        Ok(false)
    } else {
        Err(HttpError::Malformed)
    }
}

/// Turns httparse's result into the facts the daemon uses, checking framing on the way.
fn build_head<'b>(
    method: Method,
    target: &'b str,
    version: Version,
    fields: &[httparse::Header<'b>],
) -> Result<RequestHead<'b>, HttpError> {
    let (path, query) = split_target(method, target)?;
    let mut head = RequestHead {
        method,
        target,
        path,
        query,
        version,
        body: BodyFraming::None,
        keep_alive: false,
        expect_continue: false,
        has_host: false,
        host: None,
        content_type: None,
        origin: None,
        authorization: None,
        accept: None,
        upgrade_websocket: false,
        ws_key: None,
        ws_version: None,
    };
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let (mut conn_close, mut conn_keep_alive, mut conn_upgrade) = (false, false, false);
    let mut upgrade_websocket = false;

    for field in fields {
        let name = field.name.as_bytes();
        let value = trim_ows(field.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            for item in value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(item)).ok_or(HttpError::BadContentLength)?;
                match content_length {
                    Some(previous) if previous != n => {
                        return Err(HttpError::ConflictingContentLength)
                    }
                    _ => content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // A second field is `chunked, chunked` in disguise: chunked must be the only coding.
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(HttpError::UnsupportedTransferEncoding);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list_items(value) {
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                conn_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_websocket |= list_items(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"expect") {
            head.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"host") {
            if head.has_host {
                return Err(HttpError::DuplicateHeader);
            }
            head.has_host = true;
            head.host = Some(value);
        } else if name.eq_ignore_ascii_case(b"accept") {
            head.accept = head.accept.or(Some(value));
        } else {
            let slot = if name.eq_ignore_ascii_case(b"content-type") {
                &mut head.content_type
            } else if name.eq_ignore_ascii_case(b"origin") {
                &mut head.origin
            } else if name.eq_ignore_ascii_case(b"authorization") {
                &mut head.authorization
            } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
                &mut head.ws_key
            } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
                &mut head.ws_version
            } else {
                continue;
            };
            if slot.replace(value).is_some() {
                return Err(HttpError::DuplicateHeader);
            }
        }
    }

    head.body = match (content_length, chunked) {
        (Some(_), true) => return Err(HttpError::ContentLengthWithTransferEncoding),
        (None, true) if version == Version::Http10 => {
            return Err(HttpError::TransferEncodingInHttp10)
        }
        (None, true) => BodyFraming::Chunked,
        (Some(n), false) => BodyFraming::Length(n),
        (None, false) => BodyFraming::None,
    };
    let http11 = version == Version::Http11;
    head.keep_alive = !conn_close && (http11 || conn_keep_alive);
    head.expect_continue &= http11;
    head.upgrade_websocket = http11 && upgrade_websocket && conn_upgrade;
    Ok(head)
}

/// Path and query of a target, per the target forms described in the module docs.
fn split_target(method: Method, target: &str) -> Result<(&str, Option<&str>), HttpError> {
    if target == "*" {
        return match method {
            Method::Options => Ok(("*", None)),
            _ => Err(HttpError::BadTarget),
        };
    }
    let path_and_query = if target.starts_with('/') {
        target
    } else {
        let after_scheme = strip_prefix_ignore_case(target, "http://")
            .or_else(|| strip_prefix_ignore_case(target, "https://"))
            .ok_or(HttpError::BadTarget)?;
        let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
        let (authority, rest) = after_scheme.split_at(authority_end);
        if authority.is_empty() {
            return Err(HttpError::BadTarget);
        }
        rest
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    // An absolute-form target with an empty path means `/` (RFC 9112 §3.2.2).
    Ok((if path.is_empty() { "/" } else { path }, query))
}

/// `s` without `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// A plain decimal number (digits only, no sign) that fits in a `u64`.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = u64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// Items of a comma-separated field value, trimmed, empty items left out (RFC 9110 §5.6.1).
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// True when `ct` (a Content-Type value) is `application/json` or another `application/*+json`
/// type, parameters (like `charset`) allowed, case-insensitive. The `+json` types are accepted
/// because the FastAPI original accepted them; none of them is CORS-safelisted, so they cannot
/// reach the daemon from a web page without a preflight.
pub fn is_json_content_type(ct: &[u8]) -> bool {
    let essence = trim_ows(ct.split(|&b| b == b';').next().unwrap_or_default());
    let Some(subtype) = essence
        .get(..12)
        .filter(|t| t.eq_ignore_ascii_case(b"application/"))
        .and_then(|_| essence.get(12..))
    else {
        return false;
    };
    let is_token = |s: &[u8]| !s.is_empty() && s.iter().all(|&b| is_tchar(b));
    if subtype.eq_ignore_ascii_case(b"json") {
        return true;
    }
    match subtype.len().checked_sub(5).map(|i| subtype.split_at(i)) {
        Some((prefix, suffix)) => suffix.eq_ignore_ascii_case(b"+json") && is_token(prefix),
        None => false,
    }
}

/// Iterates the `key=value` pairs of a query, percent-decoding both (`+` is a space).
///
/// Empty pieces (`a=1&&b=2`) are skipped; a piece without `=` has an empty value.
/// An invalid escape or a result that is not UTF-8 yields `Err(BadQuery)` for that pair.
pub fn query_pairs(
    query: &str,
) -> impl Iterator<Item = Result<(Cow<'_, str>, Cow<'_, str>), HttpError>> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
}

/// Percent-decodes `s` with `+` as a space; borrows when there is nothing to decode.
pub fn percent_decode(s: &str) -> Result<Cow<'_, str>, HttpError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.next().and_then(hex_value);
                let low = bytes.next().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => out.push(high << 4 | low),
                    _ => return Err(HttpError::BadQuery),
                }
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| HttpError::BadQuery)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (RequestHead<'_>, usize) {
        match parse_head(buf) {
            Ok(HeadStatus::Complete { head, consumed }) => (head, consumed),
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn head(buf: &[u8]) -> RequestHead<'_> {
        complete(buf).0
    }

    fn err(buf: &[u8]) -> HttpError {
        match parse_head(buf) {
            Err(e) => e,
            Ok(HeadStatus::Partial) => panic!("expected an error, got Partial"),
            Ok(HeadStatus::Complete { head, .. }) => {
                panic!("expected an error, got {:?}", head.target)
            }
        }
    }

    /// A request with the given extra header lines (each without CRLF).
    fn with_headers(lines: &[&str]) -> Vec<u8> {
        let mut req = b"POST /sse/push HTTP/1.1\r\nHost: x\r\n".to_vec();
        for line in lines {
            req.extend_from_slice(line.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req
    }

    #[test]
    fn simple_get() {
        let buf =
            b"GET /health?format=prometheus HTTP/1.1\r\nHost: gw\r\nAccept: text/plain\r\n\r\n";
        let (h, consumed) = complete(buf);
        assert_eq!(consumed, buf.len());
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.target, "/health?format=prometheus");
        assert_eq!(h.path, "/health");
        assert_eq!(h.query, Some("format=prometheus"));
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.body, BodyFraming::None);
        assert!(h.keep_alive && h.has_host && !h.expect_continue && !h.upgrade_websocket);
        assert_eq!(h.accept, Some(&b"text/plain"[..]));
    }

    #[test]
    fn methods_are_case_sensitive_and_unknown_is_other() {
        let cases: [(&[u8], Method); 9] = [
            (b"GET", Method::Get),
            (b"HEAD", Method::Head),
            (b"POST", Method::Post),
            (b"OPTIONS", Method::Options),
            (b"PUT", Method::Put),
            (b"DELETE", Method::Delete),
            (b"PATCH", Method::Patch),
            (b"BREW", Method::Other),
            (b"get", Method::Other),
        ];
        for (m, expected) in cases {
            let mut buf = m.to_vec();
            buf.extend_from_slice(b" / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(head(&buf).method, expected);
        }
    }

    #[test]
    fn every_prefix_of_a_head_is_partial() {
        let buf = b"\r\nPOST /sse/push?x=1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\
                    Content-Type: application/json\r\n\r\n{}";
        let head_len = buf.len() - 2;
        for end in 0..head_len {
            let prefix = buf.get(..end).unwrap_or_default();
            assert_eq!(parse_head(prefix), Ok(HeadStatus::Partial), "prefix {end}");
        }
        let (h, consumed) = complete(buf);
        assert_eq!(consumed, head_len);
        assert_eq!(h.body, BodyFraming::Length(2));
        assert_eq!(h.content_type, Some(&b"application/json"[..]));
    }

    #[test]
    fn pipelined_heads_report_their_own_length() {
        let first = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
        let second =
            b"POST /sse/push HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".as_slice();
        let third = b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".as_slice();
        let buf = [first, second, third].concat();

        let (h1, c1) = complete(&buf);
        assert_eq!((h1.path, c1), ("/health", first.len()));
        let rest = buf.get(c1..).unwrap_or_default();
        let (h2, c2) = complete(rest);
        assert_eq!(h2.path, "/sse/push");
        assert_eq!(h2.body, BodyFraming::Length(3));
        assert_eq!(rest.get(c2..c2 + 3), Some(&b"abc"[..]));
        let rest = rest.get(c2 + 3..).unwrap_or_default();
        let (h3, c3) = complete(rest);
        assert_eq!(
            (h3.path, c3, h3.keep_alive),
            ("/metrics", third.len(), false)
        );
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let buf = b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (h, consumed) = complete(buf);
        assert_eq!((h.path, consumed), ("/", buf.len()));
        assert_eq!(err(b"\rGET / HTTP/1.1\r\n\r\n"), HttpError::Malformed);
        assert_eq!(parse_head(b"\r\n\r\n\r"), Ok(HeadStatus::Partial));
    }

    #[test]
    fn bare_lf_heads_are_accepted() {
        let (h, consumed) = complete(b"GET /a HTTP/1.1\nHost: x\n\nrest");
        assert_eq!((h.path, consumed), ("/a", 25));
    }

    #[test]
    fn long_target_is_414_as_soon_as_certain() {
        let mut buf = b"GET /".to_vec();
        buf.resize(4 + MAX_TARGET_BYTES, b'a');
        assert_eq!(
            parse_head(&buf),
            Ok(HeadStatus::Partial),
            "exactly at the limit"
        );
        buf.push(b'a');
        assert_eq!(
            err(&buf),
            HttpError::UriTooLong,
            "one byte over, no line end yet"
        );
    }

    #[test]
    fn target_at_the_limit_is_accepted() {
        let mut buf = b"GET /".to_vec();
        buf.resize(4 + MAX_TARGET_BYTES, b'a');
        buf.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(head(&buf).target.len(), MAX_TARGET_BYTES);
    }

    #[test]
    fn oversize_target_is_414_even_when_the_head_is_also_too_large() {
        let mut buf = b"GET /".to_vec();
        buf.resize(4 + MAX_TARGET_BYTES + 1, b'a');
        buf.extend_from_slice(b" HTTP/1.1\r\n");
        while buf.len() <= MAX_HEAD_BYTES + 100 {
            buf.extend_from_slice(
                b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert_eq!(err(&buf), HttpError::UriTooLong);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(err(&buf), HttpError::UriTooLong);
    }

    #[test]
    fn oversize_head_is_431_complete_or_not() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        buf.resize(MAX_HEAD_BYTES - 4, b'a');
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(buf.len(), MAX_HEAD_BYTES);
        assert_eq!(
            complete(&buf).1,
            MAX_HEAD_BYTES,
            "a head of exactly the limit"
        );

        let mut over = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        over.resize(MAX_HEAD_BYTES - 1, b'a');
        assert_eq!(parse_head(&over), Ok(HeadStatus::Partial));
        over.push(b'a');
        assert_eq!(over.len(), MAX_HEAD_BYTES);
        assert_eq!(
            err(&over),
            HttpError::HeadTooLarge,
            "limit reached without an end"
        );
        over.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            err(&over),
            HttpError::HeadTooLarge,
            "the end lies past the limit"
        );
    }

    #[test]
    fn endless_request_line_is_431() {
        let mut buf = b"GET".to_vec();
        buf.resize(MAX_HEAD_BYTES - 1, b'T');
        assert_eq!(parse_head(&buf), Ok(HeadStatus::Partial));
        buf.push(b'T');
        assert_eq!(err(&buf), HttpError::HeadTooLarge);
        assert_eq!(
            err(b"GET /short HTTP/1.11"),
            HttpError::Malformed,
            "junk after the version"
        );
    }

    #[test]
    fn header_count_limit() {
        let at_limit: Vec<String> = (1..MAX_HEADERS).map(|i| format!("X-H{i}: v")).collect();
        let refs: Vec<&str> = at_limit.iter().map(String::as_str).collect();
        assert!(
            head(&with_headers(&refs)).has_host,
            "Host + 63 = 64 headers"
        );

        let over: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-H{i}: v")).collect();
        let refs: Vec<&str> = over.iter().map(String::as_str).collect();
        let buf = with_headers(&refs);
        assert_eq!(err(&buf), HttpError::TooManyHeaders, "65 headers");
        let cut = buf.len() - 2;
        assert_eq!(
            err(buf.get(..cut).unwrap_or_default()),
            HttpError::TooManyHeaders
        );
    }

    #[test]
    fn versions_505_or_400() {
        for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/3", "HTTP/0.9", "HTTP/2"] {
            let buf = format!("GET / {v}\r\nHost: x\r\n\r\n");
            assert_eq!(err(buf.as_bytes()), HttpError::VersionNotSupported, "{v}");
            let line_only = format!("GET / {v}\r\n");
            assert_eq!(err(line_only.as_bytes()), HttpError::VersionNotSupported);
        }
        assert_eq!(
            err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            HttpError::VersionNotSupported
        );
        for v in [
            "http/1.1",
            "HTTP/1.",
            "HTTP/x",
            "HTTP/1.1x",
            "HTTP/1.1 extra",
            "HTTP/",
            "HTTP/10.0",
            "HTTP/1.13",
            "HTTP/2.",
        ] {
            let buf = format!("GET / {v}\r\nHost: x\r\n\r\n");
            assert_eq!(err(buf.as_bytes()), HttpError::Malformed, "{v}");
        }
        assert_eq!(err(b"GET /\r\nHost: x\r\n\r\n"), HttpError::MissingVersion);
        assert_eq!(err(b"GET /\r\n"), HttpError::MissingVersion);
        assert_eq!(err(b"GET\r\n\r\n"), HttpError::Malformed);
    }

    #[test]
    fn request_line_errors_go_in_byte_order() {
        let mut long_bad = b"GET /\x01".to_vec();
        long_bad.resize(6 + MAX_TARGET_BYTES, b'a');
        assert_eq!(
            err(&long_bad),
            HttpError::Malformed,
            "bad byte before the 414 evidence"
        );
        long_bad.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(err(&long_bad), HttpError::Malformed);

        assert_eq!(
            err(b"G(T / HTTP/2.0\r\n\r\n"),
            HttpError::Malformed,
            "bad method first"
        );
        assert_eq!(
            err(b"GET /\xff HTTP/2.0\r\n\r\n"),
            HttpError::Malformed,
            "bad UTF-8 first"
        );
        assert_eq!(err(b"GET /\xff HTTP/2"), HttpError::Malformed);
        let h = head("GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes());
        assert_eq!(h.path, "/caf\u{e9}");
    }

    #[test]
    fn unfinished_other_version_waits_for_the_line_end() {
        assert_eq!(parse_head(b"GET / HTTP/2"), Ok(HeadStatus::Partial));
        assert_eq!(parse_head(b"GET / HTTP/2.0\r"), Ok(HeadStatus::Partial));
        assert_eq!(err(b"GET / HTTP/2.0\r\n"), HttpError::VersionNotSupported);
    }

    /// The answer when the bytes arrive in two reads cut at `cut`, parsing after each read as
    /// the connection driver does: an answer on the first read stands.
    fn answer_cut_at(buf: &[u8], cut: usize) -> Result<HeadStatus<'_>, HttpError> {
        match parse_head(buf.get(..cut).unwrap_or_default()) {
            Ok(HeadStatus::Partial) => parse_head(buf),
            answer => answer,
        }
    }

    /// `buf` is answered `expected` whole and cut at any point.
    fn assert_same_answer_at_every_cut(buf: &[u8], expected: &Result<HeadStatus<'_>, HttpError>) {
        assert_same_answer_at_cuts(buf, expected, 0..buf.len());
    }

    /// `buf` is answered `expected` whole and cut at each of `cuts`.
    fn assert_same_answer_at_cuts(
        buf: &[u8],
        expected: &Result<HeadStatus<'_>, HttpError>,
        cuts: impl Iterator<Item = usize>,
    ) {
        let shown = String::from_utf8_lossy(buf.get(..80).unwrap_or(buf)).into_owned();
        assert_eq!(&parse_head(buf), expected, "whole: {shown:?}");
        for cut in cuts.take_while(|&cut| cut < buf.len()) {
            assert_eq!(
                &answer_cut_at(buf, cut),
                expected,
                "cut at {cut}: {shown:?}"
            );
        }
    }

    #[test]
    fn fuzz_reproducers_get_one_answer_however_cut() {
        let cases: [(&[u8], HttpError); 4] = [
            (
                include_bytes!("../../../fuzz/regressions/http_head/bad-method-505-vs-400"),
                HttpError::Malformed,
            ),
            (
                include_bytes!("../../../fuzz/regressions/http_head/empty-method-missing-version"),
                HttpError::Malformed,
            ),
            (
                include_bytes!("../../../fuzz/regressions/http_head/missing-version-vs-malformed"),
                HttpError::MissingVersion,
            ),
            (
                include_bytes!("../../../fuzz/regressions/http_head/uri-too-long-vs-malformed"),
                HttpError::Malformed,
            ),
        ];
        for (buf, expected) in cases {
            assert_same_answer_at_every_cut(buf, &Err(expected));
        }
    }

    #[test]
    fn request_line_answers_do_not_depend_on_the_cut() {
        let errors: [(&[u8], HttpError); 16] = [
            (b"GET /\r\nHost: x\r\n\r\n", HttpError::MissingVersion),
            (b"GET /a\n", HttpError::MissingVersion),
            (b"GET /\rX", HttpError::Malformed),
            (b"GET \r\n", HttpError::Malformed),
            (b"GET \n", HttpError::Malformed),
            (b" / HTTP/1.1\r\n", HttpError::Malformed),
            (b"GET\r\n\r\n", HttpError::Malformed),
            (b"G\x01T / HTTP/1.1\r\n\r\n", HttpError::Malformed),
            (b"GET / HTTP/2.0\r\n\r\n", HttpError::VersionNotSupported),
            (b"GET / HTTP/2.0\rX", HttpError::Malformed),
            (b"GET / HTTP/2.0 \r\n", HttpError::Malformed),
            (b"GET / HTTP/1.1\rX: y\r\n\r\n", HttpError::Malformed),
            (b"GET /\xc3 HTTP/1.1\r\n\r\n", HttpError::Malformed),
            (b"GET /\xc3\r\n", HttpError::Malformed),
            (b"GET /\xed\xa0\x80 HTTP/1.1\r\n\r\n", HttpError::Malformed),
            (b"GET /\xff HTTP/2.0\r\n\r\n", HttpError::Malformed),
        ];
        for (buf, expected) in errors {
            assert_same_answer_at_every_cut(buf, &Err(expected));
        }
        let valid = "\r\nGET /caf\u{e9}?q HTTP/1.0\nHost: x\n\n".as_bytes();
        assert_same_answer_at_every_cut(valid, &parse_head(valid));
        assert!(matches!(parse_head(valid), Ok(HeadStatus::Complete { .. })));
    }

    #[test]
    fn a_bad_byte_at_the_target_limit_is_400_and_one_more_target_byte_is_414() {
        // Targets of MAX_TARGET_BYTES whose last byte starts a two-byte UTF-8 sequence.
        let mut at_limit = b"GET /".to_vec();
        at_limit.resize(4 + MAX_TARGET_BYTES - 1, b'a');
        at_limit.push(0xc3);
        assert_eq!(parse_head(&at_limit), Ok(HeadStatus::Partial));

        // Every cut near the limit, a sample of the others (each parse rescans the target).
        let limit = at_limit.len();
        let cuts = || (0..limit - 64).step_by(97).chain(limit - 64..limit + 16);

        let mut cut_short = at_limit.clone();
        cut_short.extend_from_slice(b"a HTTP/1.1\r\n\r\n");
        assert_same_answer_at_cuts(&cut_short, &Err(HttpError::Malformed), cuts());

        let mut completed = at_limit.clone();
        completed.extend_from_slice(b"\xa9 HTTP/1.1\r\n\r\n");
        assert_same_answer_at_cuts(&completed, &Err(HttpError::UriTooLong), cuts());

        let mut ctl_after = at_limit;
        ctl_after.pop();
        ctl_after.extend_from_slice(b"a\x01aaaa");
        assert_same_answer_at_cuts(&ctl_after, &Err(HttpError::Malformed), cuts());
    }

    #[test]
    fn garbage_is_400_at_once() {
        assert_eq!(err(&[0x16, 0x03, 0x01, 0x02, 0x00]), HttpError::Malformed);
        assert_eq!(err(b"GET /a\x01b HTTP/1.1\r\n"), HttpError::Malformed);
        assert_eq!(err(b"GET  / HTTP/1.1\r\n\r\n"), HttpError::Malformed);
    }

    #[test]
    fn header_syntax_errors_are_400() {
        let cases = [
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\tX-A: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
        ];
        for c in cases {
            assert_eq!(err(c.as_bytes()), HttpError::Malformed, "{c:?}");
        }
    }

    #[test]
    fn http10_keep_alive_rules() {
        let h = head(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(
            (h.version, h.keep_alive, h.has_host),
            (Version::Http10, false, false)
        );
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n").keep_alive);
        let split = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo\r\nConnection: close\r\n\r\n";
        assert!(!head(split).keep_alive);
    }

    #[test]
    fn missing_host_is_reported_not_refused() {
        let h = head(b"GET / HTTP/1.1\r\n\r\n");
        assert!(!h.has_host);
        assert!(head(b"GET / HTTP/1.1\r\nhost:\r\n\r\n").has_host);
    }

    #[test]
    fn single_fields_must_not_repeat() {
        for name in [
            "Host",
            "Content-Type",
            "Authorization",
            "Origin",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
        ] {
            let a = format!("{name}: a");
            let b = format!("{}: b", name.to_ascii_lowercase());
            let buf = with_headers(&[&a, &b]);
            assert_eq!(err(&buf), HttpError::DuplicateHeader, "{name}");
        }
        let buf = with_headers(&["Accept: text/plain", "Accept: application/json"]);
        let h = head(&buf);
        assert_eq!(h.accept, Some(&b"text/plain"[..]));
    }

    #[test]
    fn expect_continue() {
        assert!(
            head(&with_headers(&[
                "Expect: 100-continue",
                "Content-Length: 5"
            ]))
            .expect_continue
        );
        assert!(head(&with_headers(&["expect:  100-Continue "])).expect_continue);
        assert!(!head(&with_headers(&["Expect: something-else"])).expect_continue);
        assert!(!head(&with_headers(&[])).expect_continue);
        let old = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert!(!head(old).expect_continue, "ignored from HTTP/1.0 clients");
    }

    #[test]
    fn content_length_forms() {
        let length = |lines: &[&str]| head(&with_headers(lines)).body;
        assert_eq!(length(&["Content-Length: 0"]), BodyFraming::Length(0));
        assert_eq!(length(&["Content-Length: 42"]), BodyFraming::Length(42));
        assert_eq!(length(&["content-length: 007"]), BodyFraming::Length(7));
        assert_eq!(length(&["Content-Length: 5, 5"]), BodyFraming::Length(5));
        assert_eq!(
            length(&["Content-Length: 5", "CONTENT-LENGTH: 5"]),
            BodyFraming::Length(5)
        );
        assert_eq!(
            length(&["Content-Length: 18446744073709551615"]),
            BodyFraming::Length(u64::MAX)
        );
    }

    #[test]
    fn bad_content_lengths_are_400() {
        for v in [
            "",
            "abc",
            "-1",
            "+5",
            "0x10",
            "5 5",
            "1.0",
            "5,",
            ",5",
            "18446744073709551616",
        ] {
            let line = format!("Content-Length: {v}");
            assert_eq!(
                err(&with_headers(&[&line])),
                HttpError::BadContentLength,
                "{v:?}"
            );
        }
        for lines in [
            &["Content-Length: 5, 6"][..],
            &["Content-Length: 5", "Content-Length: 6"][..],
            &["Content-Length: 5", "Content-Length: 5, 7"][..],
        ] {
            assert_eq!(
                err(&with_headers(lines)),
                HttpError::ConflictingContentLength
            );
        }
    }

    #[test]
    fn smuggling_cases_are_400() {
        let te_and_cl = with_headers(&["Content-Length: 5", "Transfer-Encoding: chunked"]);
        assert_eq!(
            err(&te_and_cl),
            HttpError::ContentLengthWithTransferEncoding
        );
        let cl_after_te = with_headers(&["Transfer-Encoding: chunked", "Content-Length: 0"]);
        assert_eq!(
            err(&cl_after_te),
            HttpError::ContentLengthWithTransferEncoding
        );
        for te in [
            &["Transfer-Encoding: gzip, chunked"][..],
            &["Transfer-Encoding: chunked, chunked"][..],
            &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"][..],
            &["Transfer-Encoding: identity"][..],
            &["Transfer-Encoding: chunked;q=1"][..],
            &["Transfer-Encoding: xchunked"][..],
            &["Transfer-Encoding:"][..],
        ] {
            assert_eq!(
                err(&with_headers(te)),
                HttpError::UnsupportedTransferEncoding,
                "{te:?}"
            );
        }
        let old = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(err(old), HttpError::TransferEncodingInHttp10);
    }

    #[test]
    fn chunked_framing() {
        for v in ["chunked", "Chunked", "CHUNKED", " chunked "] {
            let line = format!("Transfer-Encoding:{v}");
            assert_eq!(head(&with_headers(&[&line])).body, BodyFraming::Chunked);
        }
    }

    #[test]
    fn targets() {
        let h = head(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((h.method, h.path, h.query), (Method::Options, "*", None));
        assert_eq!(
            err(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
            HttpError::BadTarget
        );
        assert_eq!(
            err(b"CONNECT gw:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            HttpError::BadTarget
        );
        assert_eq!(
            err(b"GET ftp://gw/a HTTP/1.1\r\nHost: x\r\n\r\n"),
            HttpError::BadTarget
        );
        assert_eq!(
            err(b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n"),
            HttpError::BadTarget
        );

        let h = head(b"GET HTTP://gw:8080/ws?user_id=a HTTP/1.1\r\nHost: gw\r\n\r\n");
        assert_eq!((h.path, h.query), ("/ws", Some("user_id=a")));
        let h = head(b"GET https://gw HTTP/1.1\r\nHost: gw\r\n\r\n");
        assert_eq!((h.path, h.query), ("/", None));
        let h = head(b"GET http://gw?a=1 HTTP/1.1\r\nHost: gw\r\n\r\n");
        assert_eq!((h.path, h.query), ("/", Some("a=1")));

        let h = head(b"GET /p?a=1?b HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((h.path, h.query), ("/p", Some("a=1?b")));
        let h = head(b"GET /p? HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((h.path, h.query), ("/p", Some("")));
    }

    #[test]
    fn websocket_upgrade_facts() {
        let buf = b"GET /ws?user_id=a HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
                    Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\nOrigin: http://lan\r\n\r\n";
        let h = head(buf);
        assert!(h.upgrade_websocket);
        assert_eq!(h.ws_key, Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
        assert_eq!(h.ws_version, Some(&b"13"[..]));
        assert_eq!(h.origin, Some(&b"http://lan"[..]));

        let no_conn = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        assert!(!head(no_conn).upgrade_websocket);
        let other = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n";
        assert!(!head(other).upgrade_websocket);
        let old = b"GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        assert!(!head(old).upgrade_websocket);
    }

    #[test]
    fn authorization_and_content_type_values_are_trimmed() {
        let buf = with_headers(&[
            "Authorization:   Bearer t0k  ",
            "Content-Type:\tapplication/json",
        ]);
        let h = head(&buf);
        assert_eq!(h.authorization, Some(&b"Bearer t0k"[..]));
        assert_eq!(h.content_type, Some(&b"application/json"[..]));
    }

    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=\"UTF-8\"",
            "application/vnd.api+json",
            "application/merge-patch+JSON",
        ] {
            assert!(is_json_content_type(ct.as_bytes()), "{ct:?}");
        }
        for ct in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/json, text/plain",
            "text/json",
            "application/+json",
            "application/",
            "application/a b+json",
        ] {
            assert!(!is_json_content_type(ct.as_bytes()), "{ct:?}");
        }
    }

    #[test]
    fn query_decoding() {
        let pairs: Vec<(String, String)> =
            query_pairs("user_id=a%20b&token=AB%2bcd&&flag&e=&x+y=1+2")
                .map(|p| p.map(|(k, v)| (k.into_owned(), v.into_owned())))
                .collect::<Result<_, _>>()
                .unwrap_or_default();
        let expected = [
            ("user_id", "a b"),
            ("token", "AB+cd"),
            ("flag", ""),
            ("e", ""),
            ("x y", "1 2"),
        ];
        assert_eq!(pairs.len(), expected.len());
        for ((k, v), (ek, ev)) in pairs.iter().zip(expected) {
            assert_eq!((k.as_str(), v.as_str()), (ek, ev));
        }
        assert_eq!(percent_decode("Jos%C3%A9").as_deref(), Ok("José"));
        assert!(matches!(
            percent_decode("plain"),
            Ok(Cow::Borrowed("plain"))
        ));
        assert_eq!(percent_decode("a=b").as_deref(), Ok("a=b"));
        for bad in ["%", "%2", "%zz", "%G0", "%C3", "%FF", "a%é"] {
            assert_eq!(percent_decode(bad), Err(HttpError::BadQuery), "{bad:?}");
        }
        assert!(query_pairs("a=1&b=%zz").any(|p| p == Err(HttpError::BadQuery)));
    }
}

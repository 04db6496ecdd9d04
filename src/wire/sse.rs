//! Server-sent events encoding (docs/protocol.md §7.4, §7.6), sans-IO: the stream driver writes
//! these bytes.

use crate::wire::json;

/// Appends one event: an `event: T` line when `event_type` is non-empty, one `data:` line per
/// line of `data` (split on `\r\n`, `\n`, `\r`, as the SSE parser splits), then a blank line.
///
/// `event_type` comes from a validated envelope and holds no line break; should one slip in, the
/// line is cut there so the stream's framing cannot be broken.
pub fn write_event(out: &mut Vec<u8>, event_type: Option<&str>, data: &[u8]) {
    let t = event_type_line(event_type);
    if !t.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(t);
        out.push(b'\n');
    }
    for line in DataLines(Some(data)) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The bytes [`write_event`] appends for the same arguments: each line of `data` costs
/// `data: ` and a newline, so an event can be several times longer than its data.
pub fn event_len(event_type: Option<&str>, data: &[u8]) -> usize {
    let t = event_type_line(event_type);
    let head = if t.is_empty() { 0 } else { t.len() + 8 };
    DataLines(Some(data))
        .map(|line| line.len() + 7)
        .fold(head + 1, usize::saturating_add)
}

/// `event_type` up to its first line break, if any.
fn event_type_line(event_type: Option<&str>) -> &[u8] {
    let t = event_type.map(str::as_bytes).unwrap_or_default();
    t.iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .and_then(|end| t.get(..end))
        .unwrap_or(t)
}

/// The lines of an event's data, split on `\r\n`, `\n`, `\r` (at least one line).
struct DataLines<'a>(Option<&'a [u8]>);

impl<'a> Iterator for DataLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        let Some(end) = rest.iter().position(|&c| c == b'\r' || c == b'\n') else {
            self.0 = None;
            return Some(rest);
        };
        let skip = if rest.get(end..end + 2) == Some(b"\r\n") {
            2
        } else {
            1
        };
        self.0 = Some(rest.get(end + skip..).unwrap_or_default());
        rest.get(..end)
    }
}

/// Appends the keepalive comment `: keepalive`.
pub fn write_keepalive(out: &mut Vec<u8>) {
    out.extend_from_slice(b": keepalive\n\n");
}

/// Appends the data of a stream's closing error event: `{"error": TEXT, "correlation_id": ID}`
/// (spaced like Python's `json.dumps`, which the first implementation used).
pub fn write_error_data(out: &mut Vec<u8>, error: &str, correlation_id: &str) {
    out.extend_from_slice(b"{\"error\": ");
    json::write_string(out, error);
    out.extend_from_slice(b", \"correlation_id\": ");
    json::write_string(out, correlation_id);
    out.push(b'}');
}

/// One event as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEvent {
    /// The `event:` field, if any.
    pub event: Option<Vec<u8>>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
}

/// Decodes an event stream the way the WHATWG EventSource parser does (comments skipped, one
/// optional space after the colon, events dispatched on a blank line, events without data dropped).
/// For tests and fuzzing only: it buffers everything and must not see peer input.
pub fn decode_events(stream: &[u8]) -> Vec<DecodedEvent> {
    let mut events = Vec::new();
    let mut event: Option<Vec<u8>> = None;
    let mut data: Option<Vec<u8>> = None;
    let mut rest = stream;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&c| c == b'\r' || c == b'\n')
            .unwrap_or(rest.len());
        let line = rest.get(..end).unwrap_or_default();
        let skip = match rest.get(end..end + 2) {
            Some(b"\r\n") => 2,
            _ if end < rest.len() => 1,
            // A last line without terminator is incomplete: never dispatched.
            _ => break,
        };
        rest = rest.get(end + skip..).unwrap_or_default();
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(DecodedEvent {
                    event: event.take(),
                    data: d,
                });
            }
            event = None;
            continue;
        }
        if line.first() == Some(&b':') {
            continue;
        }
        let (name, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = line.get(i + 1..).unwrap_or_default();
                (
                    line.get(..i).unwrap_or_default(),
                    v.strip_prefix(b" ").unwrap_or(v),
                )
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => event = Some(value.to_vec()),
            b"data" => match data.as_mut() {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => data = Some(value.to_vec()),
            },
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(event_type: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_event(&mut out, event_type, data);
        out
    }

    #[test]
    fn event_len_is_what_write_event_appends() {
        let newlines = vec![b'\n'; 1000];
        let cases: &[(Option<&str>, &[u8])] = &[
            (None, b""),
            (None, b"{\"a\":1}"),
            (Some("t"), b"a\r\nb\rc\nd\n"),
            (Some(""), b"\r\n\r\r\n"),
            (Some("cut\nhere"), b"x"),
            (Some("\rgone"), b"x\r"),
            (None, &newlines),
        ];
        for &(t, data) in cases {
            assert_eq!(event_len(t, data), encode(t, data).len(), "{t:?} {data:?}");
        }
        // Each newline of the data costs a line of its own: 7 bytes for 1.
        assert_eq!(event_len(None, &newlines), 7 * 1001 + 1);
    }

    #[test]
    fn single_line_event() {
        assert_eq!(encode(None, b"{\"a\":1}"), b"data: {\"a\":1}\n\n");
        assert_eq!(
            encode(Some("message"), b"{}"),
            b"event: message\ndata: {}\n\n"
        );
        assert_eq!(encode(Some(""), b"{}"), b"data: {}\n\n");
    }

    #[test]
    fn multi_line_data_splits_on_every_line_break() {
        assert_eq!(
            encode(None, b"{\n\"a\": 1\r\n,\r\"b\":2\n}"),
            b"data: {\ndata: \"a\": 1\ndata: ,\ndata: \"b\":2\ndata: }\n\n"
        );
        assert_eq!(encode(None, b"a\n"), b"data: a\ndata: \n\n");
        assert_eq!(encode(None, b"\r\n\r\n"), b"data: \ndata: \ndata: \n\n");
        assert_eq!(encode(None, b""), b"data: \n\n");
        // "\n\r" is two breaks, not one.
        assert_eq!(encode(None, b"a\n\rb"), b"data: a\ndata: \ndata: b\n\n");
    }

    #[test]
    fn event_type_cannot_break_framing() {
        assert_eq!(
            encode(Some("x\r\ndata: evil"), b"1"),
            b"event: x\ndata: 1\n\n"
        );
        assert_eq!(encode(Some("\nx"), b"1"), b"data: 1\n\n");
    }

    #[test]
    fn round_trip_normalizes_line_breaks_to_lf() {
        let cases: &[(Option<&str>, &[u8], &[u8])] = &[
            (None, b"{\"a\":1}", b"{\"a\":1}"),
            (Some("message"), b"x\r\ny\rz\nw", b"x\ny\nz\nw"),
            (None, b" leading space", b" leading space"),
            (None, b":colon first", b":colon first"),
            (Some("e"), b"\n\n", b"\n\n"),
            (None, b"", b""),
        ];
        for &(t, data, want) in cases {
            let mut stream = Vec::new();
            write_keepalive(&mut stream);
            write_event(&mut stream, t, data);
            write_keepalive(&mut stream);
            write_event(&mut stream, None, b"second");
            let got = decode_events(&stream);
            assert_eq!(
                got,
                vec![
                    DecodedEvent {
                        event: t.map(|t| t.as_bytes().to_vec()),
                        data: want.to_vec(),
                    },
                    DecodedEvent {
                        event: None,
                        data: b"second".to_vec(),
                    },
                ],
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn keepalive_is_a_comment() {
        let mut out = Vec::new();
        write_keepalive(&mut out);
        assert_eq!(out, b": keepalive\n\n");
        assert!(decode_events(&out).is_empty());
    }

    #[test]
    fn error_data_is_json() {
        let mut out = Vec::new();
        write_error_data(&mut out, "Timeout waiting for response", "req_\"1");
        assert_eq!(
            out,
            b"{\"error\": \"Timeout waiting for response\", \"correlation_id\": \"req_\\\"1\"}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "Timeout waiting for response");
        assert_eq!(v["correlation_id"], "req_\"1");
    }

    #[test]
    fn decoder_drops_incomplete_and_dataless_events() {
        assert!(decode_events(b"data: x\n").is_empty());
        assert!(decode_events(b"event: e\n\n").is_empty());
        assert_eq!(
            decode_events(b"data:x\r\n\r\n"),
            vec![DecodedEvent {
                event: None,
                data: b"x".to_vec()
            }]
        );
    }
}

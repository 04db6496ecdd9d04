//! The SSE encoder on arbitrary event types and data.
//!
//! Input: `event_type 0xFF data` (no `0xFF`: no event type); the event type is read as UTF-8,
//! lossily, since it is a `&str`.
//!
//! Invariants:
//! - `write_event` then `decode_events` (the WHATWG parsing rules) gives back one event with the
//!   same event type and the data with every line break (`\r\n`, `\r`, `\n`) turned into `\n`,
//!   and the events around it are not disturbed; an event type with a line break is cut there
//!   (it cannot come from a validated envelope);
//! - the encoded event is framing-safe: `event: `/`data: ` lines ended by LF, no CR anywhere, and
//!   its only empty line is the last one;
//! - `write_error_data` is JSON that reads back to the same two strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wssed::wire::sse::{decode_events, write_error_data, write_event, write_keepalive, DecodedEvent};

fuzz_target!(|data: &[u8]| {
    let (event_type, payload) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (
            Some(String::from_utf8_lossy(data.get(..i).unwrap_or_default())),
            data.get(i + 1..).unwrap_or_default(),
        ),
        None => (None, data),
    };
    let event_type = event_type.as_deref();

    let mut event = Vec::new();
    write_event(&mut event, event_type, payload);
    check_framing(&event);

    let mut stream = Vec::new();
    write_keepalive(&mut stream);
    write_event(&mut stream, Some("before"), b"1");
    stream.extend_from_slice(&event);
    write_keepalive(&mut stream);
    write_event(&mut stream, None, b"after");
    let expected_type = event_type
        .map(|t| t.split(['\r', '\n']).next().unwrap_or_default())
        .filter(|t| !t.is_empty())
        .map(|t| t.as_bytes().to_vec());
    let expected = vec![
        DecodedEvent {
            event: Some(b"before".to_vec()),
            data: b"1".to_vec(),
        },
        DecodedEvent {
            event: expected_type,
            data: normalise_line_breaks(payload),
        },
        DecodedEvent {
            event: None,
            data: b"after".to_vec(),
        },
    ];
    assert_eq!(decode_events(&stream), expected);

    let text = String::from_utf8_lossy(payload);
    let cid = event_type.unwrap_or("req_1");
    let mut json = Vec::new();
    write_error_data(&mut json, &text, cid);
    let v: serde_json::Value = match serde_json::from_slice(&json) {
        Ok(v) => v,
        Err(e) => panic!(
            "error data is not JSON ({e}): {}",
            String::from_utf8_lossy(&json)
        ),
    };
    assert_eq!(v.get("error").and_then(|e| e.as_str()), Some(&*text));
    assert_eq!(v.get("correlation_id").and_then(|e| e.as_str()), Some(cid));
});

/// SSE's own rule: `\r\n`, `\r` and `\n` each end a line.
fn normalise_line_breaks(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        if b == b'\r' {
            out.push(b'\n');
            i += if data.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// One event's bytes: field lines, then exactly one empty line at the end.
fn check_framing(event: &[u8]) {
    assert!(!event.contains(&b'\r'), "CR in the encoded event");
    assert!(event.ends_with(b"\n\n"), "event not terminated");
    let body = event.get(..event.len() - 1).unwrap_or_default();
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let Some((last, fields)) = lines.split_last() else {
        return;
    };
    assert!(last.is_empty(), "last line not terminated");
    for (i, line) in fields.iter().enumerate() {
        assert!(
            line.starts_with(b"data: ") || (i == 0 && line.starts_with(b"event: ")),
            "unexpected line {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

//! The JSON scanner, envelope validation, the device-frame splice, batches and the
//! classification of device replies, on whatever an upstream or a device sends.
//!
//! serde_json is the oracle. Known, intended differences from its `Value` parser are excluded by
//! comparing with the right serde_json view:
//! - lone surrogate escapes (`"\ud800"`) and numbers beyond f64 (`1e400`) are valid RFC 8259
//!   (Python reads them) but `Value` refuses them: syntax is compared with `RawValue`, which
//!   checks the grammar without decoding, and the `Value` checks run only when `Value` parses;
//! - nesting: wssed refuses depth > `MAX_JSON_DEPTH` (128) at the bracket that exceeds it;
//!   `RawValue` has no limit, so that one disagreement is checked for exactly;
//! - duplicate keys: `Value` keeps the last; wssed refuses them at the envelope's top level and
//!   keeps them in `data` (the last one counts, as `Value`'s does).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::Value;
use wssed::wire::json::{self, Kind};
use wssed::wire::limits::{MAX_CORRELATION_ID_BYTES, MAX_JSON_DEPTH};
use wssed::wire::envelope::{
    classify_device_message, parse_batch, parse_envelope, write_device_frame, DeviceMessage,
    Envelope, ValidationErrors,
};

/// The correlation id a stream would get; escapes and non-ASCII test the string writer.
const FRESH_CID: &str = "cid-\"q\"\\\u{1}\u{7f}é😀";
/// A batch limit small enough that `too_long` is reachable.
const MAX_BATCH: usize = 8;

fuzz_target!(|data: &[u8]| {
    let ours = json::validate(data);
    let value: Option<Value> = serde_json::from_slice(data).ok();
    check_syntax(data, ours);
    if let (Ok(kind), Some(v)) = (ours, &value) {
        check_walkers(data, kind, v);
    }
    if value.is_some() {
        assert!(ours.is_ok(), "serde_json accepts what wssed refuses");
    }

    let single = parse_envelope(data);
    match &single {
        Ok(env) => check_envelope(env, value.as_ref()),
        Err(errors) => check_errors(errors),
    }
    if let Some(v) = &value {
        assert_eq!(
            single.is_ok(),
            envelope_ok(data, v),
            "validity differs from the documented rules"
        );
    }

    match parse_batch(data, MAX_BATCH) {
        Ok(list) => {
            let elements: Vec<_> = json::elements(json::trim_ws(data)).collect();
            assert_eq!(list.len(), elements.len());
            assert!((1..=MAX_BATCH).contains(&list.len()));
            for (env, element) in list.iter().zip(&elements) {
                let item_value = serde_json::from_slice(element.value).ok();
                check_envelope(env, item_value.as_ref());
                assert_eq!(
                    parse_envelope(element.value).as_ref(),
                    Ok(env),
                    "batch item"
                );
            }
        }
        Err(errors) => {
            check_errors(&errors);
            if let Some(Value::Array(items)) = &value {
                let elements: Vec<_> = json::elements(json::trim_ws(data)).collect();
                let all_ok = (1..=MAX_BATCH).contains(&items.len())
                    && elements.iter().all(|e| parse_envelope(e.value).is_ok());
                assert!(!all_ok, "a batch of valid items refused");
            }
        }
    }

    check_device_message(data, ours, value.as_ref());
});

/// wssed's validity must equal the grammar's (serde_json's `RawValue`), but for depth.
fn check_syntax(data: &[u8], ours: Result<Kind, json::JsonError>) {
    let raw = serde_json::from_slice::<&RawValue>(data).is_ok();
    match ours {
        Ok(_) => assert!(raw, "wssed accepts what the grammar refuses"),
        Err(e) => {
            assert!(e.offset <= data.len(), "error offset past the end");
            if raw {
                let at = data.get(e.offset).copied();
                assert!(
                    matches!(at, Some(b'{' | b'['))
                        && depth_before(data, e.offset) == MAX_JSON_DEPTH,
                    "wssed refuses valid JSON at {} (not the depth limit)",
                    e.offset
                );
            }
        }
    }
}

/// Open brackets before `end`, outside strings, in JSON that is valid up to `end`.
fn depth_before(data: &[u8], end: usize) -> usize {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in data.get(..end).unwrap_or_default() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth
}

/// `members`/`elements`/`units` on a valid document against serde_json's tree.
fn check_walkers(data: &[u8], kind: Kind, v: &Value) {
    let expected = match v {
        Value::Object(_) => Kind::Object,
        Value::Array(_) => Kind::Array,
        Value::String(_) => Kind::String,
        Value::Number(_) => Kind::Number,
        Value::Bool(true) => Kind::True,
        Value::Bool(false) => Kind::False,
        Value::Null => Kind::Null,
    };
    assert_eq!(kind, expected);
    let trimmed = json::trim_ws(data);
    match v {
        Value::Object(map) => {
            let mut last: BTreeMap<String, Value> = BTreeMap::new();
            for m in json::members(trimmed) {
                let key = decode_key(m.key);
                assert!(json::key_is(m.key, &key), "key_is on its own text");
                assert!(json::literals_equal(m.key, m.key));
                let member: Value = serde_json::from_slice(m.value).expect("member value");
                assert_eq!(kind_of(&member), m.kind);
                last.insert(key, member);
            }
            let theirs: BTreeMap<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(last, theirs, "members differ");
            assert_eq!(json::is_empty_object(trimmed), map.is_empty());
        }
        Value::Array(items) => {
            let ours: Vec<Value> = json::elements(trimmed)
                .map(|e| {
                    let item: Value = serde_json::from_slice(e.value).expect("element value");
                    assert_eq!(kind_of(&item), e.kind);
                    item
                })
                .collect();
            assert_eq!(&ours, items, "elements differ");
        }
        Value::String(s) => {
            assert_eq!(decode_key(trimmed), *s, "string decoding");
        }
        _ => {}
    }
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Object(_) => Kind::Object,
        Value::Array(_) => Kind::Array,
        Value::String(_) => Kind::String,
        Value::Number(_) => Kind::Number,
        Value::Bool(true) => Kind::True,
        Value::Bool(false) => Kind::False,
        Value::Null => Kind::Null,
    }
}

/// A string literal's text, via wssed's decoder; `json::plain_str` must agree when it applies.
fn decode_key(literal: &[u8]) -> String {
    let mut out = String::new();
    json::unescape_lossy(literal, &mut out);
    if let Some(plain) = json::plain_str(literal) {
        assert_eq!(plain, out);
    }
    out
}

/// A string field within limits and free of the forbidden characters.
fn string_ok(v: Option<&Value>, min: usize, max: usize, forbidden: &[char]) -> bool {
    match v {
        Some(Value::String(s)) => {
            (min..=max).contains(&s.len()) && !s.contains(|c| forbidden.contains(&c))
        }
        _ => false,
    }
}

/// The envelope rules of docs/protocol.md §3, applied to serde_json's tree of the body.
fn envelope_ok(data: &[u8], v: &Value) -> bool {
    let Value::Object(map) = v else {
        return false;
    };
    // Duplicate top-level keys are refused; `Value` keeps only the last, so count raw members.
    if json::members(json::trim_ws(data)).count() != map.len() {
        return false;
    }
    let controls: Vec<char> = ('\u{0}'..='\u{1f}').chain(['\u{7f}']).collect();
    let absent_or_null = |k: &str| matches!(map.get(k), None | Some(Value::Null));
    string_ok(map.get("user_id"), 1, 64, &controls)
        && match map.get("data") {
            Some(Value::Object(d)) => {
                d.get("correlation_id").is_none()
                    || string_ok(d.get("correlation_id"), 1, MAX_CORRELATION_ID_BYTES, &[])
            }
            _ => false,
        }
        && (absent_or_null("event_type") || string_ok(map.get("event_type"), 0, 64, &['\r', '\n']))
        && (absent_or_null("event_id")
            || string_ok(map.get("event_id"), 0, 128, &['\r', '\n', '\0']))
        && (absent_or_null("timestamp") || matches!(map.get("timestamp"), Some(Value::Number(_))))
}

/// An accepted envelope: its fields match the body, and its device frame is the data object
/// with `user_id`, `correlation_id` and `original_sender` added when missing.
fn check_envelope(env: &Envelope<'_>, body: Option<&Value>) {
    let mut frame = Vec::new();
    write_device_frame(env, FRESH_CID, &mut frame);
    assert!(
        serde_json::from_slice::<&RawValue>(&frame).is_ok(),
        "frame is not JSON: {}",
        String::from_utf8_lossy(&frame)
    );
    assert_eq!(
        json::validate(&frame),
        Ok(Kind::Object),
        "frame is not an object"
    );
    let frame_members: Vec<String> = json::members(&frame).map(|m| decode_key(m.key)).collect();
    for key in ["user_id", "correlation_id", "original_sender"] {
        assert!(frame_members.iter().any(|k| k == key), "frame lacks {key}");
    }
    // The frame is the data object with members appended: data's bytes are kept.
    let data_head = env.data.split_last().map(|(_, h)| h).unwrap_or_default();
    assert!(frame.starts_with(data_head), "data's bytes are not kept");

    let Some(Value::Object(body)) = body else {
        return;
    };
    let Some(Value::Object(data)) = body.get("data") else {
        panic!("accepted without a data object");
    };
    assert_eq!(
        body.get("user_id"),
        Some(&Value::from(env.user_id.as_str()))
    );
    let event_type = match body.get("event_type") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    };
    assert_eq!(env.event_type.as_deref(), event_type);
    let event_id = match body.get("event_id") {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    assert_eq!(env.event_id.as_deref(), event_id);
    let timestamp = env
        .timestamp
        .map(|t| serde_json::from_slice::<Value>(t).ok());
    let expected_ts = match body.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(t) => Some(Some(t.clone())),
    };
    assert_eq!(timestamp, expected_ts, "timestamp");
    let cid = match data.get("correlation_id") {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    assert_eq!(env.correlation_id.as_deref(), cid);
    assert_eq!(env.data_has_user_id, data.contains_key("user_id"));
    assert_eq!(
        env.data_has_original_sender,
        data.contains_key("original_sender")
    );
    let mention = ["message", "text", "content", "body"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_str));
    assert_eq!(
        env.mention_text.map(decode_key).as_deref(),
        mention,
        "mention text"
    );

    let Ok(Value::Object(frame)) = serde_json::from_slice::<Value>(&frame) else {
        panic!("frame of a serde-readable body is not readable");
    };
    for (k, v) in data {
        assert_eq!(frame.get(k), Some(v), "data member {k} changed");
    }
    if !data.contains_key("user_id") {
        assert_eq!(frame.get("user_id"), body.get("user_id"));
    }
    if !data.contains_key("correlation_id") {
        assert_eq!(frame.get("correlation_id"), Some(&Value::from(FRESH_CID)));
    }
    if !data.contains_key("original_sender") {
        let ts = data
            .get("timestamp")
            .or_else(|| body.get("timestamp"))
            .cloned()
            .unwrap_or(Value::Null);
        let expected = serde_json::json!({"user_id": env.user_id.as_str(), "timestamp": ts});
        assert_eq!(frame.get("original_sender"), Some(&expected));
    }
    let added = ["user_id", "correlation_id", "original_sender"]
        .iter()
        .filter(|k| !data.contains_key(**k))
        .count();
    assert_eq!(frame.len(), data.len() + added, "unexpected frame members");
}

/// A 422 body is JSON with one `detail` item per listed error.
fn check_errors(errors: &ValidationErrors<'_>) {
    assert!(!errors.is_empty(), "an error without errors");
    let mut out = Vec::new();
    errors.write_json(&mut out);
    assert!(
        serde_json::from_slice::<&RawValue>(&out).is_ok(),
        "422 body is not JSON: {}",
        String::from_utf8_lossy(&out)
    );
    if let Ok(v) = serde_json::from_slice::<Value>(&out) {
        let n = v.get("detail").and_then(Value::as_array).map(Vec::len);
        assert_eq!(n, Some(errors.len()));
    }
}

/// `classify_device_message` against the same rules applied to serde_json's tree.
fn check_device_message(data: &[u8], ours: Result<Kind, json::JsonError>, v: Option<&Value>) {
    let got = classify_device_message(data);
    match ours {
        Err(_) => assert_eq!(got, DeviceMessage::Invalid),
        Ok(Kind::Object) => assert!(matches!(got, DeviceMessage::Object { .. })),
        Ok(_) => assert_eq!(got, DeviceMessage::NotObject),
    }
    let (
        Some(Value::Object(map)),
        DeviceMessage::Object {
            correlation_id,
            is_final,
        },
    ) = (v, &got)
    else {
        return;
    };
    fn usable(v: Option<&Value>) -> Option<&str> {
        match v {
            Some(Value::String(s)) if (1..=MAX_CORRELATION_ID_BYTES).contains(&s.len()) => {
                Some(s.as_str())
            }
            _ => None,
        }
    }
    let expected = usable(map.get("correlation_id")).or_else(|| match map.get("data") {
        Some(Value::Object(d)) => usable(d.get("correlation_id")),
        _ => None,
    });
    assert_eq!(correlation_id.as_deref(), expected, "correlation id");
    let final_expected = map.get("is_final") == Some(&Value::Bool(true))
        || map.get("type").and_then(Value::as_str) == Some("final_response");
    assert_eq!(*is_final, final_expected, "is_final");
}

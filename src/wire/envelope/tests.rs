use super::*;
use crate::wire::limits::MAX_FIELD_ERRORS_PER_ITEM;

fn env(body: &str) -> Envelope<'_> {
    match parse_envelope(body.as_bytes()) {
        Ok(env) => env,
        Err(e) => panic!("{body}: {}", errors_json(&e)),
    }
}

fn errors_json(e: &ValidationErrors<'_>) -> String {
    let mut out = Vec::new();
    e.write_json(&mut out);
    String::from_utf8(out).unwrap()
}

/// The 422 body for a single message, parsed back with serde_json.
fn rejected(body: &[u8]) -> serde_json::Value {
    match parse_envelope(body) {
        Ok(env) => panic!("{:?} accepted: {env:?}", String::from_utf8_lossy(body)),
        Err(e) => serde_json::from_str(&errors_json(&e)).unwrap(),
    }
}

fn rejected_batch(body: &[u8], max: usize) -> serde_json::Value {
    match parse_batch(body, max) {
        Ok(envs) => panic!("{:?} accepted: {envs:?}", String::from_utf8_lossy(body)),
        Err(e) => serde_json::from_str(&errors_json(&e)).unwrap(),
    }
}

/// `(type, loc, msg)` of every listed error.
fn triples(v: &serde_json::Value) -> Vec<(String, serde_json::Value, String)> {
    v["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e.as_object().unwrap().len(), 3, "{e}");
            (
                e["type"].as_str().unwrap().to_string(),
                e["loc"].clone(),
                e["msg"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn one(body: &str) -> (String, serde_json::Value, String) {
    let t = triples(&rejected(body.as_bytes()));
    assert_eq!(t.len(), 1, "{body}: {t:?}");
    t.into_iter().next().unwrap()
}

use serde_json::json;

#[test]
fn minimal_message_is_accepted() {
    let e = env(r#"{"user_id":"test123","data":{}}"#);
    assert_eq!(e.user_id.as_str(), "test123");
    assert_eq!(e.data, b"{}");
    assert_eq!(e.event_type, None);
    assert_eq!(e.event_id, None);
    assert_eq!(e.timestamp, None);
    assert_eq!(e.correlation_id, None);
    assert!(!e.data_has_user_id && !e.data_has_original_sender);
    assert_eq!(e.data_timestamp, None);
    assert_eq!(e.mention_text, None);
}

#[test]
fn full_message_fields_borrow_and_decode() {
    let body = r#" {"user_id":"te\u0073t","data":{"message":"Hello @x","type":"request","correlation_id":"req_123","timestamp":5},
        "event_type":"message","event_id":"e1","timestamp":1704067200.5,"extra":[1,2]} "#;
    let e = env(body);
    assert_eq!(e.user_id.as_str(), "test");
    assert_eq!(
        e.data,
        br#"{"message":"Hello @x","type":"request","correlation_id":"req_123","timestamp":5}"#
    );
    assert_eq!(e.event_type.as_deref(), Some("message"));
    assert_eq!(e.event_id.as_deref(), Some("e1"));
    assert_eq!(e.timestamp, Some(&b"1704067200.5"[..]));
    assert_eq!(e.correlation_id.as_deref(), Some("req_123"));
    assert_eq!(e.data_timestamp, Some(&b"5"[..]));
    assert_eq!(e.mention_text, Some(&br#""Hello @x""#[..]));
}

#[test]
fn escaped_top_level_keys_count() {
    let e = env(r#"{"\u0075ser_id":"u","d\u0061ta":{"x":1},"event\u005ftype":"t"}"#);
    assert_eq!(e.user_id.as_str(), "u");
    assert_eq!(e.data, br#"{"x":1}"#);
    assert_eq!(e.event_type.as_deref(), Some("t"));
}

#[test]
fn nulls_and_empty_event_type_are_absent() {
    let e = env(r#"{"user_id":"u","data":{},"event_type":null,"event_id":null,"timestamp":null}"#);
    assert_eq!((e.event_type, e.event_id, e.timestamp), (None, None, None));
    let e = env(r#"{"user_id":"u","data":{},"event_type":"","event_id":""}"#);
    assert_eq!(e.event_type, None);
    assert_eq!(e.event_id.as_deref(), Some(""));
}

#[test]
fn empty_body_is_missing() {
    assert_eq!(
        rejected(b""),
        json!({"detail":[{"type":"missing","loc":["body"],"msg":"Field required"}]})
    );
    assert_eq!(
        rejected_batch(b"", 10),
        json!({"detail":[{"type":"missing","loc":["body"],"msg":"Field required"}]})
    );
}

#[test]
fn broken_json_names_the_byte_offset() {
    assert_eq!(
        rejected(b"{\"user_id\":"),
        json!({"detail":[{"type":"json_invalid","loc":["body",11],"msg":"JSON decode error"}]})
    );
    assert_eq!(one("  ").1, json!(["body", 2]));
    assert_eq!(one(r#"{"user_id":"u",}"#).1, json!(["body", 15]));
    // Offsets are bytes, not characters.
    assert_eq!(
        one("{\"user_id\":\"\u{e9}\u{e9}\" x}").1,
        json!(["body", 18])
    );
    assert_eq!(
        triples(&rejected(b"\xef\xbb\xbf{\"user_id\":\"u\",\"data\":{}}"))[0].1,
        json!(["body", 0])
    );
    let t = triples(&rejected(b"{\"user_id\":\"u\xff\",\"data\":{}}"));
    assert_eq!(
        (t[0].0.as_str(), &t[0].1),
        ("json_invalid", &json!(["body", 13]))
    );
    assert_eq!(
        triples(&rejected_batch(b"[{}", 10))[0],
        (
            "json_invalid".into(),
            json!(["body", 3]),
            "JSON decode error".into()
        )
    );
}

#[test]
fn non_object_body_is_dict_type() {
    for body in ["[]", "1", "\"x\"", "null", "true"] {
        assert_eq!(
            one(body),
            (
                "dict_type".into(),
                json!(["body"]),
                "Input should be a valid dictionary".into()
            ),
            "{body}"
        );
    }
}

#[test]
fn missing_fields_are_all_listed() {
    assert_eq!(
        rejected(b"{}"),
        json!({"detail":[
            {"type":"missing","loc":["body","user_id"],"msg":"Field required"},
            {"type":"missing","loc":["body","data"],"msg":"Field required"}
        ]})
    );
}

#[test]
fn every_wrong_field_is_listed_in_declaration_order() {
    let t = triples(&rejected(
        br#"{"timestamp":"x","event_id":1,"event_type":[],"data":[],"user_id":null}"#,
    ));
    let got: Vec<(&str, serde_json::Value)> = t
        .iter()
        .map(|(ty, loc, _)| (ty.as_str(), loc.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("string_type", json!(["body", "user_id"])),
            ("dict_type", json!(["body", "data"])),
            ("string_type", json!(["body", "event_type"])),
            ("string_type", json!(["body", "event_id"])),
            ("float_type", json!(["body", "timestamp"])),
        ]
    );
    assert_eq!(t[0].2, "Input should be a valid string");
    assert_eq!(t[1].2, "Input should be a valid dictionary");
    assert_eq!(t[4].2, "Input should be a valid number");
    assert!(t.len() <= MAX_FIELD_ERRORS_PER_ITEM);
}

#[test]
fn user_id_rules() {
    let t = |uid: &str| one(&format!(r#"{{"user_id":{uid},"data":{{}}}}"#));
    assert_eq!(
        t(r#""""#),
        (
            "string_too_short".into(),
            json!(["body", "user_id"]),
            "String should have at least 1 character".into()
        )
    );
    let long = format!("\"{}\"", "a".repeat(65));
    assert_eq!(
        t(&long),
        (
            "string_too_long".into(),
            json!(["body", "user_id"]),
            "String should have at most 64 characters".into()
        )
    );
    // 64 bytes is fine; the limit is bytes, so 33 two-byte chars are too long.
    assert_eq!(
        env(&format!(
            r#"{{"user_id":"{}","data":{{}}}}"#,
            "a".repeat(64)
        ))
        .user_id
        .len(),
        64
    );
    assert_eq!(
        t(&format!("\"{}\"", "\u{e9}".repeat(33))).0,
        "string_too_long"
    );
    // Escapes count after decoding: 64 escaped chars are 64 bytes.
    let escaped = format!("\"{}\"", "\\u0061".repeat(64));
    assert_eq!(
        env(&format!(r#"{{"user_id":{escaped},"data":{{}}}}"#))
            .user_id
            .len(),
        64
    );
    for ctl in [
        r#""a\u0000""#,
        r#""a\n""#,
        r#""\u001f""#,
        r#""\u007f""#,
        "\"a\u{7f}\"",
    ] {
        assert_eq!(
            t(ctl),
            (
                "value_error".into(),
                json!(["body", "user_id"]),
                "Value error, user_id must not contain control characters".into()
            ),
            "{ctl}"
        );
    }
    for wrong in ["1", "true", "{}", "[]", "null"] {
        assert_eq!(t(wrong).0, "string_type", "{wrong}");
    }
    assert_eq!(
        t(r#""\ud800""#),
        (
            "string_unicode".into(),
            json!(["body", "user_id"]),
            "Input should be a valid string, unable to parse raw data as a unicode string".into()
        )
    );
    // U+0080 (C1) and U+2028 are not in the refused range.
    assert_eq!(
        env(r#"{"user_id":"a\u0080\u2028","data":{}}"#)
            .user_id
            .as_str(),
        "a\u{80}\u{2028}"
    );
}

#[test]
fn event_type_rules() {
    let t = |v: &str| {
        one(&format!(
            r#"{{"user_id":"u","data":{{}},"event_type":{v}}}"#
        ))
    };
    assert_eq!(
        t(&format!("\"{}\"", "e".repeat(65))),
        (
            "string_too_long".into(),
            json!(["body", "event_type"]),
            "String should have at most 64 characters".into()
        )
    );
    for bad in [r#""a\nb""#, r#""a\r""#, r#""\r\n""#] {
        assert_eq!(
            t(bad),
            (
                "value_error".into(),
                json!(["body", "event_type"]),
                "Value error, event_type must not contain CR or LF".into()
            )
        );
    }
    assert_eq!(t("5").0, "string_type");
    // Other control characters are allowed in event_type.
    let e = env(r#"{"user_id":"u","data":{},"event_type":"a\tb"}"#);
    assert_eq!(e.event_type.as_deref(), Some("a\tb"));
}

#[test]
fn event_id_rules() {
    let t = |v: &str| one(&format!(r#"{{"user_id":"u","data":{{}},"event_id":{v}}}"#));
    let ok = format!(
        r#"{{"user_id":"u","data":{{}},"event_id":"{}"}}"#,
        "i".repeat(128)
    );
    assert_eq!(env(&ok).event_id.map(|s| s.len()), Some(128));
    assert_eq!(
        t(&format!("\"{}\"", "i".repeat(129))),
        (
            "string_too_long".into(),
            json!(["body", "event_id"]),
            "String should have at most 128 characters".into()
        )
    );
    for bad in [r#""a\nb""#, r#""a\r""#, r#""a\u0000""#] {
        assert_eq!(
            t(bad),
            (
                "value_error".into(),
                json!(["body", "event_id"]),
                "Value error, event_id must not contain CR, LF or NUL".into()
            )
        );
    }
    assert_eq!(t("{}").0, "string_type");
}

#[test]
fn timestamp_must_be_a_number() {
    for ok in ["0", "-1", "1.5e3", "1704067200", "1e400"] {
        let body = format!(r#"{{"user_id":"u","data":{{}},"timestamp":{ok}}}"#);
        assert_eq!(env(&body).timestamp, Some(ok.as_bytes()));
    }
    for bad in [r#""1704067200""#, "true", "false", "[]", "{}"] {
        assert_eq!(
            one(&format!(
                r#"{{"user_id":"u","data":{{}},"timestamp":{bad}}}"#
            )),
            (
                "float_type".into(),
                json!(["body", "timestamp"]),
                "Input should be a valid number".into()
            ),
            "{bad}"
        );
    }
}

#[test]
fn data_must_be_an_object() {
    for bad in ["null", "[]", "\"x\"", "1"] {
        assert_eq!(
            one(&format!(r#"{{"user_id":"u","data":{bad}}}"#)),
            (
                "dict_type".into(),
                json!(["body", "data"]),
                "Input should be a valid dictionary".into()
            )
        );
    }
}

#[test]
fn data_correlation_id_rules() {
    let t = |v: &str| {
        one(&format!(
            r#"{{"user_id":"u","data":{{"correlation_id":{v}}}}}"#
        ))
    };
    let loc = json!(["body", "data", "correlation_id"]);
    assert_eq!(
        t("null"),
        (
            "string_type".into(),
            loc.clone(),
            "Input should be a valid string".into()
        )
    );
    assert_eq!(t("12").0, "string_type");
    assert_eq!(
        t(r#""""#),
        (
            "string_too_short".into(),
            loc.clone(),
            "String should have at least 1 character".into()
        )
    );
    assert_eq!(
        t(&format!("\"{}\"", "c".repeat(129))),
        (
            "string_too_long".into(),
            loc.clone(),
            "String should have at most 128 characters".into()
        )
    );
    let ok = format!(
        r#"{{"user_id":"u","data":{{"correlation_id":"{}"}}}}"#,
        "c".repeat(128)
    );
    assert_eq!(env(&ok).correlation_id.map(|s| s.len()), Some(128));
    let e = env(r#"{"user_id":"u","data":{"correlation_id":"r\u0065q"}}"#);
    assert_eq!(e.correlation_id.as_deref(), Some("req"));
    // With duplicates inside data, the last one counts (Python dict).
    let e = env(r#"{"user_id":"u","data":{"correlation_id":"a","correlation_id":"b"}}"#);
    assert_eq!(e.correlation_id.as_deref(), Some("b"));
    // A nested correlation_id is not data's own.
    let e = env(r#"{"user_id":"u","data":{"inner":{"correlation_id":null}}}"#);
    assert_eq!(e.correlation_id, None);
}

#[test]
fn duplicate_envelope_keys_are_value_errors() {
    let t = triples(&rejected(br#"{"user_id":"a","data":{},"user_id":"b"}"#));
    assert_eq!(
        t,
        vec![(
            "value_error".into(),
            json!(["body", "user_id"]),
            "Value error, duplicate key".into()
        )]
    );
    // Escaped spelling is the same key; the loc keeps the key as written (same JSON string).
    let t = triples(&rejected(
        br#"{"user_id":"a","data":{},"us\u0065r_id":"b"}"#,
    ));
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, json!(["body", "user_id"]));
    // Unknown fields may not repeat either; each repeated key is listed once.
    let t = triples(&rejected(
        br#"{"x":1,"user_id":"a","x":2,"data":{},"x":3,"y":0,"y":0}"#,
    ));
    let locs: Vec<_> = t.iter().map(|e| e.1.clone()).collect();
    assert_eq!(locs, vec![json!(["body", "x"]), json!(["body", "y"])]);
    // Duplicates inside data travel as they are.
    let e = env(r#"{"user_id":"a","data":{"k":1,"k":2}}"#);
    assert_eq!(e.data, br#"{"k":1,"k":2}"#);
    // A duplicated field is not also reported as missing or mistyped; other fields still are.
    let t = triples(&rejected(br#"{"data":1,"data":{},"event_id":5}"#));
    let got: Vec<_> = t.iter().map(|e| (e.0.as_str(), e.1.clone())).collect();
    assert_eq!(
        got,
        vec![
            ("value_error", json!(["body", "data"])),
            ("missing", json!(["body", "user_id"])),
            ("string_type", json!(["body", "event_id"])),
        ]
    );
}

#[test]
fn duplicate_detection_scales_past_the_pairwise_path() {
    // Many distinct keys: accepted.
    let mut body = String::from(r#"{"user_id":"u","data":{}"#);
    for i in 0..500 {
        body.push_str(&format!(",\"k{i}\":{i}"));
    }
    body.push('}');
    assert!(parse_envelope(body.as_bytes()).is_ok());
    // The same with two repeats, one spelled with an escape: both found, in order.
    let mut dup = body.trim_end_matches('}').to_string();
    dup.push_str(r#","k\u0033\u0030":0,"k7":0,"user_id":"v"}"#);
    let t = triples(&rejected(dup.as_bytes()));
    let locs: Vec<_> = t.iter().map(|e| e.1.clone()).collect();
    assert_eq!(
        locs,
        vec![
            json!(["body", "user_id"]),
            json!(["body", "k7"]),
            json!(["body", "k30"])
        ]
    );
    // Thousands of copies of one key: one error (sorted, not pairwise).
    let mut same = String::from(r#"{"user_id":"u","data":{}"#);
    for _ in 0..10_000 {
        same.push_str(r#","a":0"#);
    }
    same.push('}');
    let t = triples(&rejected(same.as_bytes()));
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, json!(["body", "a"]));
    // Lone surrogates are distinct keys from each other and from U+FFFD.
    let mut sur = body.trim_end_matches('}').to_string();
    sur.push_str(r#","\ud800":0,"\ud801":0,"\ufffd":0}"#);
    assert!(parse_envelope(sur.as_bytes()).is_ok());
}

#[test]
fn data_fields_for_the_splice() {
    let e =
        env(r#"{"user_id":"u","data":{"user_id":"x","original_sender":null,"timestamp":null}}"#);
    assert!(e.data_has_user_id);
    assert!(e.data_has_original_sender);
    assert_eq!(e.data_timestamp, Some(&b"null"[..]));
    let e = env(r#"{"user_id":"u","data":{"us\u0065r_id":1,"timestamp":"t"}}"#);
    assert!(e.data_has_user_id);
    assert_eq!(e.data_timestamp, Some(&br#""t""#[..]));
}

fn frame(body: &str, cid: &str) -> String {
    let e = env(body);
    let mut out = Vec::new();
    write_device_frame(&e, cid, &mut out);
    // Every frame is valid JSON.
    assert!(
        json::validate(&out).is_ok(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8(out).unwrap()
}

#[test]
fn splice_into_empty_data() {
    assert_eq!(
        frame(r#"{"user_id":"u1","data":{}}"#, "c-1"),
        r#"{"user_id":"u1","correlation_id":"c-1","original_sender":{"user_id":"u1","timestamp":null}}"#
    );
    assert_eq!(
        frame("{\"user_id\":\"u1\",\"data\":{ \n }}", "c-1"),
        "{ \n \"user_id\":\"u1\",\"correlation_id\":\"c-1\",\"original_sender\":{\"user_id\":\"u1\",\"timestamp\":null}}"
    );
}

#[test]
fn splice_keeps_data_bytes_as_received() {
    assert_eq!(
        frame(
            r#"{"user_id":"u1","data":{ "msg" : "hi\u00e9" , "n":1.50 } ,"timestamp":17}"#,
            "c"
        ),
        r#"{ "msg" : "hi\u00e9" , "n":1.50 ,"user_id":"u1","correlation_id":"c","original_sender":{"user_id":"u1","timestamp":17}}"#
    );
    // Duplicate keys in data travel as they are.
    assert_eq!(
        frame(r#"{"user_id":"u","data":{"k":1,"k":2}}"#, "c"),
        r#"{"k":1,"k":2,"user_id":"u","correlation_id":"c","original_sender":{"user_id":"u","timestamp":null}}"#
    );
}

#[test]
fn splice_keeps_fields_already_in_data() {
    assert_eq!(
        frame(
            r#"{"user_id":"u","data":{"user_id":"other","correlation_id":"mine","original_sender":{"a":1}}}"#,
            "mine"
        ),
        r#"{"user_id":"other","correlation_id":"mine","original_sender":{"a":1}}"#
    );
    assert_eq!(
        frame(
            r#"{"user_id":"u","data":{"correlation_id":"mine"}}"#,
            "mine"
        ),
        r#"{"correlation_id":"mine","user_id":"u","original_sender":{"user_id":"u","timestamp":null}}"#
    );
}

#[test]
fn splice_timestamp_precedence() {
    // data.timestamp wins, even when null.
    assert_eq!(
        frame(
            r#"{"user_id":"u","data":{"timestamp":null},"timestamp":5}"#,
            "c"
        ),
        r#"{"timestamp":null,"user_id":"u","correlation_id":"c","original_sender":{"user_id":"u","timestamp":null}}"#
    );
    assert_eq!(
        frame(
            r#"{"user_id":"u","data":{"timestamp":"2024"},"timestamp":5}"#,
            "c"
        ),
        r#"{"timestamp":"2024","user_id":"u","correlation_id":"c","original_sender":{"user_id":"u","timestamp":"2024"}}"#
    );
    assert_eq!(
        frame(r#"{"user_id":"u","data":{},"timestamp":-1.5e2}"#, "c"),
        r#"{"user_id":"u","correlation_id":"c","original_sender":{"user_id":"u","timestamp":-1.5e2}}"#
    );
}

#[test]
fn splice_escapes_the_user_id() {
    let f = frame(r#"{"user_id":"a\"b\\c\u00e9","data":{}}"#, "c");
    let v: serde_json::Value = serde_json::from_str(&f).unwrap();
    assert_eq!(v["user_id"], "a\"b\\c\u{e9}");
    assert_eq!(v["original_sender"]["user_id"], "a\"b\\c\u{e9}");
}

#[test]
fn batch_of_valid_items() {
    let body = br#"[{"user_id":"user1","data":{"msg":"msg1"},"event_type":"message"},
                   {"user_id":"user2","data":{"msg":"msg2"}}]"#;
    let envs = parse_batch(body, 1000).unwrap();
    assert_eq!(envs.len(), 2);
    assert_eq!(envs[0].user_id.as_str(), "user1");
    assert_eq!(envs[1].data, br#"{"msg":"msg2"}"#);
    assert_eq!(
        parse_batch(br#"[{"user_id":"u","data":{}}]"#, 1)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn batch_shape_errors() {
    assert_eq!(
        rejected_batch(br#"{"user_id":"u","data":{}}"#, 10),
        json!({"detail":[{"type":"list_type","loc":["body"],"msg":"Input should be a valid list"}]})
    );
    assert_eq!(
        rejected_batch(b" [ ] ", 10),
        json!({"detail":[{"type":"too_short","loc":["body"],
            "msg":"List should have at least 1 item after validation, not 0"}]})
    );
    let item = r#"{"user_id":"u","data":{}}"#;
    let body = format!("[{}]", vec![item; 1001].join(","));
    assert_eq!(
        rejected_batch(body.as_bytes(), 1000),
        json!({"detail":[{"type":"too_long","loc":["body"],
            "msg":"List should have at most 1000 items after validation, not 1001"}]})
    );
    let body = format!("[{item},{item}]");
    assert_eq!(
        triples(&rejected_batch(body.as_bytes(), 1))[0].2,
        "List should have at most 1 item after validation, not 2"
    );
}

#[test]
fn batch_errors_carry_the_index_and_all_items_are_checked() {
    let body = br#"[{"user_id":"ok","data":{}}, 5, {"data":{}}, {"user_id":"u","data":{"correlation_id":""},"user_id":"v"}]"#;
    let t = triples(&rejected_batch(body, 10));
    let got: Vec<_> = t.iter().map(|e| (e.0.as_str(), e.1.clone())).collect();
    assert_eq!(
        got,
        vec![
            ("dict_type", json!(["body", 1])),
            ("missing", json!(["body", 2, "user_id"])),
            ("value_error", json!(["body", 3, "user_id"])),
            (
                "string_too_short",
                json!(["body", 3, "data", "correlation_id"])
            ),
        ]
    );
}

#[test]
fn error_list_is_bounded() {
    // Each `{}` item costs two errors; enough items to pass the bound.
    let n = MAX_VALIDATION_ERRORS / 2 + 10;
    let body = format!("[{}]", vec!["{}"; n].join(","));
    let e = parse_batch(body.as_bytes(), n).unwrap_err();
    assert_eq!(e.len(), MAX_VALIDATION_ERRORS);
    assert!(e.was_cut());
    // A default-sized batch of worst-case items is listed in full.
    let bad = r#"{"user_id":1,"data":1,"event_type":1,"event_id":1,"timestamp":"x"}"#;
    let body = format!("[{}]", vec![bad; 1000].join(","));
    let e = parse_batch(body.as_bytes(), 1000).unwrap_err();
    assert_eq!(e.len(), 1000 * MAX_FIELD_ERRORS_PER_ITEM);
    assert!(!e.was_cut());
}

#[test]
fn error_json_is_exact() {
    let e = parse_envelope(br#"{"user_id":"","data":{}}"#).unwrap_err();
    assert_eq!(
        errors_json(&e),
        r#"{"detail":[{"type":"string_too_short","loc":["body","user_id"],"msg":"String should have at least 1 character"}]}"#
    );
}

#[test]
fn device_messages_are_classified() {
    assert_eq!(classify_device_message(b"not json"), DeviceMessage::Invalid);
    assert_eq!(classify_device_message(b""), DeviceMessage::Invalid);
    assert_eq!(
        classify_device_message(b"\xef\xbb\xbf{}"),
        DeviceMessage::Invalid
    );
    assert_eq!(classify_device_message(b"[1]"), DeviceMessage::NotObject);
    assert_eq!(classify_device_message(b"\"x\""), DeviceMessage::NotObject);
    let obj = |cid: Option<&str>, is_final: bool| DeviceMessage::Object {
        correlation_id: cid.map(|c| heapless::String::try_from(c).unwrap()),
        is_final,
    };
    assert_eq!(classify_device_message(b"{}"), obj(None, false));
    assert_eq!(
        classify_device_message(
            br#"{"type":"response","data":{"message":"hi","correlation_id":"req_123"},"correlation_id":"req_123"}"#
        ),
        obj(Some("req_123"), false)
    );
    // Top level wins over data; data is the fallback.
    assert_eq!(
        classify_device_message(br#"{"correlation_id":"top","data":{"correlation_id":"in"}}"#),
        obj(Some("top"), false)
    );
    assert_eq!(
        classify_device_message(br#"{"data":{"correlation_id":"in"}}"#),
        obj(Some("in"), false)
    );
    assert_eq!(
        classify_device_message(br#"{"correlation_id":5,"data":{"correlation_id":"in"}}"#),
        obj(Some("in"), false)
    );
    assert_eq!(
        classify_device_message(br#"{"correlation_id":"","data":{"correlation_id":"in"}}"#),
        obj(Some("in"), false)
    );
    assert_eq!(
        classify_device_message(br#"{"correlation_id":"r\u0065q"}"#),
        obj(Some("req"), false)
    );
    let long = format!(r#"{{"correlation_id":"{}"}}"#, "c".repeat(129));
    assert_eq!(classify_device_message(long.as_bytes()), obj(None, false));
    assert_eq!(
        classify_device_message(br#"{"data":"x","correlation_id":null}"#),
        obj(None, false)
    );
}

#[test]
fn device_messages_end_streams_only_on_true_or_final_response() {
    let fin = |text: &[u8]| match classify_device_message(text) {
        DeviceMessage::Object { is_final, .. } => is_final,
        other => panic!("{other:?}"),
    };
    assert!(fin(br#"{"is_final":true}"#));
    assert!(fin(br#"{"is_final" : true ,"x":1}"#));
    assert!(fin(br#"{"type":"final_response"}"#));
    assert!(fin(br#"{"type":"final\u005fresponse"}"#));
    assert!(fin(br#"{"is_\u0066inal":true}"#));
    assert!(!fin(br#"{"is_final":"true"}"#));
    assert!(!fin(br#"{"is_final":1}"#));
    assert!(!fin(br#"{"is_final":false}"#));
    assert!(!fin(br#"{"type":"response"}"#));
    assert!(!fin(br#"{"type":"chunk"}"#));
    assert!(!fin(
        br#"{"data":{"is_final":true,"type":"final_response"}}"#
    ));
    assert!(!fin(br#"{"type":["final_response"]}"#));
    // Last duplicate wins, as in a Python dict.
    assert!(!fin(br#"{"is_final":true,"is_final":false}"#));
}

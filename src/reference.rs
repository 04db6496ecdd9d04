//! Keeps `docs/protocol.md` true: every close code, 422 error `type`, batch item `error`,
//! stream ending, and offline mailbox `reason` and drop reason the code can emit is documented
//! in the section that promises it, and so are the CORS fields and bounds browsers are told
//! (§17, §18). The lists
//! come from the code itself (each enum's `every()`, `wire::listed`), so a variant added
//! without its documentation fails here.

use crate::app::push::Undelivered;
use crate::app::send::End;
use crate::hub::ack::NotKept;
use crate::hub::mailbox::{gap_frame, Dropped};
use crate::wire::close::Close;
use crate::wire::envelope::{ErrorKind, ValueReason};

const REFERENCE: &str = include_str!("../docs/protocol.md");

/// The text of section `number` ("8.8"): from its heading to the next heading.
fn section(number: &str) -> &'static str {
    let mut start = None;
    let mut offset = 0;
    for line in REFERENCE.split_inclusive('\n') {
        let heading = line.starts_with('#');
        match start {
            None if heading
                && line.trim_start_matches('#').trim_start().split(' ').next() == Some(number) =>
            {
                start = Some(offset + line.len());
            }
            Some(s) if heading => return &REFERENCE[s..offset],
            _ => {}
        }
        offset += line.len();
    }
    match start {
        Some(s) => &REFERENCE[s..],
        None => panic!("docs/protocol.md has no section {number}"),
    }
}

/// Asserts that some line of section `number` holds every one of `parts`.
fn assert_line_with(number: &str, parts: &[&str], what: &str) {
    let found = section(number)
        .lines()
        .any(|line| parts.iter().all(|p| line.contains(p)));
    assert!(
        found,
        "{what} is not documented: docs/protocol.md §{number} has no line with {parts:?}"
    );
}

#[test]
fn every_close_code_is_in_the_close_code_table() {
    for close in Close::every() {
        let code = format!("| `{}` |", close.code());
        let reason = format!("| `{}` |", close.reason());
        assert_line_with("8.8", &[&code, &reason], &format!("{close:?}"));
    }
}

#[test]
fn every_error_type_is_in_the_error_type_table() {
    for kind in ErrorKind::every() {
        let row = format!("| `{}` |", kind.type_name());
        assert_line_with("3.4", &[&row], &format!("{kind:?}"));
    }
    for reason in ValueReason::every() {
        let row = format!("| `{}` |", ErrorKind::Value(reason).type_name());
        assert_line_with("3.4", &[&row, reason.text()], &format!("{reason:?}"));
    }
}

#[test]
fn every_batch_item_error_and_push_message_is_documented() {
    for why in Undelivered::every() {
        let error = format!("\"{}\"", why.code());
        assert_line_with("6.2", &["`error`", &error], &format!("{why:?}"));
        let message = format!("\"message\":\"{}\"", why.text());
        assert_line_with("5.2", &[&message], &format!("{why:?}"));
    }
}

#[test]
fn every_way_a_stream_ends_is_in_the_stream_endings_table() {
    let data = |text: &str| format!("`{{\"error\": \"{text}\", \"correlation_id\": ID}}`");
    for end in End::every() {
        if let Some(text) = end.error_text() {
            assert_line_with("7.7", &[&data(text)], &format!("{end:?}"));
        }
    }
    // The one event of a stream whose request reached no device (`send::Start::Undelivered`).
    let text = Undelivered::NotConnected.text();
    assert_line_with("7.7", &[&data(text)], "a send to no device");
}

#[test]
fn every_mailbox_reason_and_drop_reason_is_documented() {
    for why in NotKept::every() {
        let row = format!("| `\"{}\"` |", why.code());
        assert_line_with("20.3", &[&row], &format!("{why:?}"));
    }
    for why in Dropped::every() {
        let row = format!("| `{}` |", why.label());
        assert_line_with("20.2", &[&row], &format!("{why:?}"));
    }
    let gap = gap_frame(7).replace('7', "N");
    assert_line_with("20.5", &[&format!("`{gap}`")], "the mailbox_gap frame");
}

#[test]
fn what_browsers_are_told_is_in_the_browser_sections() {
    use crate::app::error::ApiError;
    use crate::app::status::MAX_LISTED_DEVICES;
    use crate::hub::origins::ORIGIN_LOG_INTERVAL_SECS;
    use crate::wire::cors::{ALLOW_HEADERS, EXPOSE_HEADERS, MAX_AGE_SECS};
    let value = |v: &str| format!("`{v}`");
    assert_line_with(
        "17.2",
        &["`Access-Control-Allow-Headers`", &value(ALLOW_HEADERS)],
        "the preflight's request fields",
    );
    assert_line_with(
        "17.2",
        &["`Access-Control-Max-Age`", &value(MAX_AGE_SECS)],
        "the preflight's cache time",
    );
    assert_line_with(
        "17.3",
        &["`Access-Control-Expose-Headers`", &value(EXPOSE_HEADERS)],
        "the fields a page may read",
    );
    let interval = format!("({ORIGIN_LOG_INTERVAL_SECS} s");
    assert_line_with("17.4", &[&interval], "the refused-origin log interval");
    let most = format!("({MAX_LISTED_DEVICES},");
    assert_line_with(
        "18.2",
        &["`MAX_LISTED_DEVICES`", &most],
        "the device list's bound",
    );
    let detail = ApiError::DeviceListOff.detail();
    assert_line_with("18.2", &["403", detail], "the device list's refusal");
    assert_line_with("2.6", &["| 403 |", detail], "the device list's refusal");
}

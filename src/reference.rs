//! Keeps `docs/protocol.md` true: every close code, 422 error `type`, batch item `error`,
//! stream ending, and offline mailbox `reason` and drop reason the code can emit is documented
//! in the section that promises it, and so are the CORS fields and bounds browsers are told
//! (§17, §18), and every refusal's status, body, extra headers and whether it closes the
//! connection (§2.6). The lists
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

/// One of every refusal whose body is fixed (a 422's body is §3's; the `/ws` checks' own
/// `400` texts are checked by the e2e `ws` tests). The match has no wildcard arm: a new variant
/// does not compile until it is placed here, beside the list it must join.
fn every_refusal() -> Vec<crate::app::error::ApiError> {
    use crate::app::error::ApiError;
    use crate::wire::http::error::HttpError;
    let placed = |e: &ApiError| match e {
        ApiError::Http(_)
        | ApiError::MissingHost
        | ApiError::Unauthorized
        | ApiError::OriginRefused
        | ApiError::DeviceListOff
        | ApiError::NotFound
        | ApiError::MethodNotAllowed(_)
        | ApiError::HeadTimeout
        | ApiError::BodyTimeout
        | ApiError::CorrelationInUse
        | ApiError::LengthRequired
        | ApiError::UnsupportedMediaType
        | ApiError::UpgradeRequired
        | ApiError::WebSocketVersion
        | ApiError::QueueFull
        | ApiError::TooManySends
        | ApiError::TooManyConnections
        | ApiError::OverBudget
        | ApiError::ClusterUnavailable => true,
        #[cfg(feature = "tls")]
        ApiError::PlainHttpOnTls => true,
        ApiError::BadRequest(_) | ApiError::Invalid(_) => false,
    };
    let mut all: Vec<ApiError> = HttpError::every().into_iter().map(ApiError::Http).collect();
    all.extend([
        ApiError::MissingHost,
        ApiError::Unauthorized,
        ApiError::OriginRefused,
        ApiError::DeviceListOff,
        ApiError::NotFound,
        ApiError::MethodNotAllowed("POST, OPTIONS"),
        ApiError::HeadTimeout,
        ApiError::BodyTimeout,
        ApiError::CorrelationInUse,
        ApiError::LengthRequired,
        ApiError::UnsupportedMediaType,
        ApiError::UpgradeRequired,
        ApiError::WebSocketVersion,
        ApiError::QueueFull,
        ApiError::TooManySends,
        ApiError::TooManyConnections,
        ApiError::OverBudget,
        ApiError::ClusterUnavailable,
    ]);
    #[cfg(feature = "tls")]
    all.push(ApiError::PlainHttpOnTls);
    assert!(all.iter().all(placed));
    all
}

#[test]
fn every_refusal_is_in_the_refusals_table_as_it_is_written() {
    use crate::wire::http::response::Persist;
    for refusal in every_refusal() {
        let mut out = Vec::new();
        refusal.write(&mut out, Persist::KeepAlive, false);
        let text = String::from_utf8(out).expect("ASCII answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let status = refusal.status();
        let row = format!("| {status} | `{body}` |");
        let line = section("2.6")
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| {
                panic!("{refusal:?} is not documented: docs/protocol.md §2.6 has no row {row}")
            });
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let closes = if refusal.closes_connection() {
            "yes"
        } else {
            "no"
        };
        assert_eq!(
            cells.get(4),
            Some(&closes),
            "{refusal:?}: the closes column of {line}"
        );
        for field in head.lines().skip(1) {
            let name = field.split(':').next().unwrap_or_default();
            if ["Content-Type", "Content-Length", "Connection"].contains(&name) {
                continue;
            }
            let extra = cells.get(3).copied().unwrap_or_default();
            assert!(
                extra.contains(field),
                "{refusal:?}: §2.6's extra headers `{extra}` lack `{field}`"
            );
        }
    }
}

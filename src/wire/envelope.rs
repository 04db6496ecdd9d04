//! Envelope validation (the upstream's request body), the frame a device receives, and the
//! classification of a device's reply (docs/protocol.md §3, §4,
//! §7.5). Sans-IO: bytes in, values or errors out.

use crate::wire::ascii::push_decimal;
use crate::wire::json::{self, Kind, UnescapeError};
use crate::wire::limits::{
    MAX_CORRELATION_ID_BYTES, MAX_EVENT_ID_BYTES, MAX_EVENT_TYPE_BYTES, MAX_USER_ID_BYTES,
    MAX_VALIDATION_ERRORS,
};
use crate::wire::listed::listed;

/// Objects with at most this many members are checked for duplicate keys pairwise, on the stack.
const DUPLICATE_SCAN_PAIRWISE_MEMBERS: usize = 16;

/// A user id as the daemon holds it: 1–64 bytes of UTF-8 without control characters.
pub type UserId = heapless::String<MAX_USER_ID_BYTES>;
/// A correlation id as the daemon holds it: 1–128 bytes.
pub type CorrelationId = heapless::String<MAX_CORRELATION_ID_BYTES>;

/// True for the characters no user id may hold: U+0000–U+001F and U+007F, the JSON side's
/// control characters. Every place that checks a user id asks this one rule.
pub fn is_id_control(c: char) -> bool {
    c <= '\u{1f}' || c == '\u{7f}'
}

/// One validated message, borrowing from the request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    /// Addressee (1–64 bytes, no control characters).
    pub user_id: UserId,
    /// The `data` object exactly as received.
    pub data: &'a [u8],
    /// `event_type`; `""` and `null` count as absent.
    pub event_type: Option<heapless::String<MAX_EVENT_TYPE_BYTES>>,
    /// `event_id`; `null` counts as absent, `""` is kept.
    pub event_id: Option<heapless::String<MAX_EVENT_ID_BYTES>>,
    /// Raw bytes of the `timestamp` number; `null` counts as absent.
    pub timestamp: Option<&'a [u8]>,
    /// `data.correlation_id` (1–128 bytes) when the upstream chose one.
    pub correlation_id: Option<CorrelationId>,
    /// `data` already has a `user_id` member (kept as it is).
    pub data_has_user_id: bool,
    /// `data` already has an `original_sender` member (kept as it is).
    pub data_has_original_sender: bool,
    /// Raw value of `data.timestamp` (any JSON value; `null` counts as present).
    pub data_timestamp: Option<&'a [u8]>,
    /// Raw literal (quotes included) of the first string among `data.message`, `data.text`,
    /// `data.content`, `data.body`: the text searched for `@mentions`.
    pub mention_text: Option<&'a [u8]>,
}

/// A top-level field of the envelope, in pydantic's declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `user_id`
    UserId,
    /// `data`
    Data,
    /// `event_type`
    EventType,
    /// `event_id`
    EventId,
    /// `timestamp`
    Timestamp,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::UserId,
        Field::Data,
        Field::EventType,
        Field::EventId,
        Field::Timestamp,
    ];

    /// The field's JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Field::UserId => "user_id",
            Field::Data => "data",
            Field::EventType => "event_type",
            Field::EventId => "event_id",
            Field::Timestamp => "timestamp",
        }
    }
}

listed! {
    /// Why a `value_error` was raised. (`Default` only so that a test can list
    /// `ErrorKind::Value`.)
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub enum ValueReason {
        /// A key appears twice at the top level of the envelope.
        #[default]
        DuplicateKey,
        /// `user_id` holds a control character (U+0000–U+001F, U+007F).
        ControlCharacter,
        /// `event_type` holds CR or LF (it becomes an SSE `event:` line).
        LineBreak,
        /// `event_id` holds CR, LF or NUL.
        LineBreakOrNul,
    }
}

impl ValueReason {
    /// The end of the `msg`, after `Value error, ` (and the field's name).
    pub(crate) fn text(self) -> &'static str {
        match self {
            ValueReason::DuplicateKey => "duplicate key",
            ValueReason::ControlCharacter => "must not contain control characters",
            ValueReason::LineBreak => "must not contain CR or LF",
            ValueReason::LineBreakOrNul => "must not contain CR, LF or NUL",
        }
    }
}

listed! {
    /// What is wrong, named after pydantic v2's error types.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ErrorKind {
        /// `missing`: a required field (or the whole body) is absent.
        Missing,
        /// `json_invalid`: the body is not JSON (`loc` carries the byte offset).
        JsonInvalid,
        /// `string_type`
        StringType,
        /// `string_unicode`: a string with a lone surrogate escape.
        StringUnicode,
        /// `dict_type`
        DictType,
        /// `float_type`
        FloatType,
        /// `list_type`
        ListType,
        /// `string_too_short`
        StringTooShort {
            /// Least bytes allowed.
            min: usize,
        },
        /// `string_too_long`
        StringTooLong {
            /// Most bytes allowed.
            max: usize,
        },
        /// `too_short` (a list)
        TooShort {
            /// Least items allowed.
            min: usize,
            /// Items given.
            actual: usize,
        },
        /// `too_long` (a list)
        TooLong {
            /// Most items allowed.
            max: usize,
            /// Items given.
            actual: usize,
        },
        /// `value_error`
        Value(ValueReason),
    }
}

impl ErrorKind {
    /// pydantic's `type` string.
    pub fn type_name(self) -> &'static str {
        match self {
            ErrorKind::Missing => "missing",
            ErrorKind::JsonInvalid => "json_invalid",
            ErrorKind::StringType => "string_type",
            ErrorKind::StringUnicode => "string_unicode",
            ErrorKind::DictType => "dict_type",
            ErrorKind::FloatType => "float_type",
            ErrorKind::ListType => "list_type",
            ErrorKind::StringTooShort { .. } => "string_too_short",
            ErrorKind::StringTooLong { .. } => "string_too_long",
            ErrorKind::TooShort { .. } => "too_short",
            ErrorKind::TooLong { .. } => "too_long",
            ErrorKind::Value(_) => "value_error",
        }
    }

    fn write_msg(self, loc: &Loc<'_>, out: &mut Vec<u8>) {
        let fixed = match self {
            ErrorKind::Missing => "Field required",
            ErrorKind::JsonInvalid => "JSON decode error",
            ErrorKind::StringType => "Input should be a valid string",
            ErrorKind::StringUnicode => {
                "Input should be a valid string, unable to parse raw data as a unicode string"
            }
            ErrorKind::DictType => "Input should be a valid dictionary",
            ErrorKind::FloatType => "Input should be a valid number",
            ErrorKind::ListType => "Input should be a valid list",
            ErrorKind::StringTooShort { min } => {
                return push_bound(out, b"String should have at least ", min, "character", None)
            }
            ErrorKind::StringTooLong { max } => {
                return push_bound(out, b"String should have at most ", max, "character", None)
            }
            ErrorKind::TooShort { min, actual } => {
                return push_bound(
                    out,
                    b"List should have at least ",
                    min,
                    "item",
                    Some(actual),
                )
            }
            ErrorKind::TooLong { max, actual } => {
                return push_bound(out, b"List should have at most ", max, "item", Some(actual))
            }
            ErrorKind::Value(reason) => {
                out.extend_from_slice(b"Value error, ");
                if reason != ValueReason::DuplicateKey {
                    if let LocPath::Field(f) = loc.path {
                        out.extend_from_slice(f.name().as_bytes());
                        out.push(b' ');
                    }
                }
                out.extend_from_slice(reason.text().as_bytes());
                return;
            }
        };
        out.extend_from_slice(fixed.as_bytes());
    }
}

/// Where in the body an error is, after the leading `"body"` (and the batch index, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocPath<'a> {
    /// The body (or batch item) itself.
    Whole,
    /// Byte offset of a JSON syntax error.
    Offset(usize),
    /// A top-level field.
    Field(Field),
    /// `data.correlation_id`
    DataCorrelationId,
    /// A top-level key as written (raw literal, quotes included): duplicate keys.
    Key(&'a [u8]),
}

/// An error's location: `["body", item?, ...path]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc<'a> {
    /// Index of the batch item, for batches.
    pub item: Option<usize>,
    /// The rest of the location.
    pub path: LocPath<'a>,
}

/// One validation error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationError<'a> {
    /// What is wrong.
    pub kind: ErrorKind,
    /// Where.
    pub loc: Loc<'a>,
}

/// The errors of one request body, in order, at most [`MAX_VALIDATION_ERRORS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidationErrors<'a> {
    list: Vec<ValidationError<'a>>,
    /// Errors found, listed or not.
    found: usize,
}

impl<'a> ValidationErrors<'a> {
    fn push(&mut self, kind: ErrorKind, item: Option<usize>, path: LocPath<'a>) {
        self.found = self.found.saturating_add(1);
        if self.list.len() < MAX_VALIDATION_ERRORS {
            self.list.push(ValidationError {
                kind,
                loc: Loc { item, path },
            });
        }
    }

    fn one(kind: ErrorKind, path: LocPath<'a>) -> Self {
        let mut errors = ValidationErrors::default();
        errors.push(kind, None, path);
        errors
    }

    /// The errors, in the order pydantic would list them.
    pub fn iter(&self) -> impl Iterator<Item = &ValidationError<'a>> {
        self.list.iter()
    }

    /// Number of errors listed.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when nothing is listed (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// True when more errors were found than [`MAX_VALIDATION_ERRORS`] lets us list.
    pub fn was_cut(&self) -> bool {
        self.found > self.list.len()
    }

    /// Appends the FastAPI 422 body:
    /// `{"detail":[{"type":"missing","loc":["body","user_id"],"msg":"Field required"}]}`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"detail\":[");
        for (i, e) in self.list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"type\":\"");
            out.extend_from_slice(e.kind.type_name().as_bytes());
            out.extend_from_slice(b"\",\"loc\":[\"body\"");
            if let Some(index) = e.loc.item {
                out.push(b',');
                push_decimal(out, index as u64);
            }
            match e.loc.path {
                LocPath::Whole => {}
                LocPath::Offset(at) => {
                    out.push(b',');
                    push_decimal(out, at as u64);
                }
                LocPath::Field(f) => {
                    out.extend_from_slice(b",\"");
                    out.extend_from_slice(f.name().as_bytes());
                    out.push(b'"');
                }
                LocPath::DataCorrelationId => {
                    out.extend_from_slice(b",\"data\",\"correlation_id\"");
                }
                LocPath::Key(literal) => {
                    // A validated literal is already a JSON string equal to the decoded key.
                    out.push(b',');
                    out.extend_from_slice(literal);
                }
            }
            out.extend_from_slice(b"],\"msg\":\"");
            e.kind.write_msg(&e.loc, out);
            out.extend_from_slice(b"\"}");
        }
        out.extend_from_slice(b"]}");
    }
}

/// `N noun` with pydantic's plural rule ("1 character", "64 characters").
/// A length bound's message: `what N nouns`, and for lists pydantic's `after validation, not M`.
fn push_bound(out: &mut Vec<u8>, what: &[u8], n: usize, noun: &str, actual: Option<usize>) {
    out.extend_from_slice(what);
    push_count(out, n, noun);
    if let Some(actual) = actual {
        out.extend_from_slice(b" after validation, not ");
        push_decimal(out, actual as u64);
    }
}

fn push_count(out: &mut Vec<u8>, n: usize, noun: &str) {
    push_decimal(out, n as u64);
    out.push(b' ');
    out.extend_from_slice(noun.as_bytes());
    if n != 1 {
        out.push(b's');
    }
}

/// Reusable buffers for the duplicate-key check, shared by the items of a batch.
struct DupScratch<'a> {
    keys: Vec<&'a [u8]>,
    /// Decoded texts of all keys of the object, back to back.
    decoded: Vec<u8>,
    /// (start, end) in `decoded`, and the member index.
    spans: Vec<(usize, usize, usize)>,
    firsts: Vec<usize>,
}

impl<'a> DupScratch<'a> {
    fn new() -> Self {
        DupScratch {
            keys: Vec::new(),
            decoded: Vec::new(),
            spans: Vec::new(),
            firsts: Vec::new(),
        }
    }

    /// Calls `found` with the first occurrence of every key that the object repeats, in order.
    fn duplicates(&mut self, object: &'a [u8], mut found: impl FnMut(&'a [u8])) {
        let mut small: heapless::Vec<&'a [u8], DUPLICATE_SCAN_PAIRWISE_MEMBERS> =
            heapless::Vec::new();
        let mut overflow = false;
        for m in json::members(object) {
            if small.push(m.key).is_err() {
                overflow = true;
                break;
            }
        }
        if !overflow {
            for (i, &k) in small.iter().enumerate() {
                let seen_before = small.iter().take(i).any(|&e| json::literals_equal(e, k));
                let seen_after = small
                    .iter()
                    .skip(i + 1)
                    .any(|&l| json::literals_equal(k, l));
                if !seen_before && seen_after {
                    found(k);
                }
            }
            return;
        }
        // Many keys: sort the decoded texts so that equal keys sit side by side. O(n log n)
        // whatever the keys are (pairwise or hash buckets degrade when thousands are equal).
        self.keys.clear();
        self.decoded.clear();
        self.spans.clear();
        self.firsts.clear();
        for (i, m) in json::members(object).enumerate() {
            self.keys.push(m.key);
            let start = self.decoded.len();
            json::decode_wtf8(m.key, &mut self.decoded);
            self.spans.push((start, self.decoded.len(), i));
        }
        let decoded = &self.decoded;
        let text = |&(s, e, _): &(usize, usize, usize)| decoded.get(s..e).unwrap_or_default();
        self.spans
            .sort_unstable_by(|a, b| text(a).cmp(text(b)).then(a.2.cmp(&b.2)));
        for run in self.spans.chunk_by(|a, b| text(a) == text(b)) {
            if let [first, _, ..] = run {
                self.firsts.push(first.2);
            }
        }
        self.firsts.sort_unstable();
        for &i in &self.firsts {
            found(self.keys.get(i).copied().unwrap_or_default());
        }
    }
}

/// Validates one message body. Every error is collected, with `loc` starting at `"body"`.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, ValidationErrors<'_>> {
    let Some(object) = parse_root(body, Kind::Object)? else {
        return Err(ValidationErrors::one(ErrorKind::DictType, LocPath::Whole));
    };
    let mut errors = ValidationErrors::default();
    let mut scratch = DupScratch::new();
    match check_item(object, None, &mut errors, &mut scratch) {
        Some(env) if errors.is_empty() => Ok(env),
        _ => Err(errors),
    }
}

/// Validates a batch body: a JSON array of `1..=max_batch` messages, every item validated
/// (errors at `["body", index, ...]`).
pub fn parse_batch(
    body: &[u8],
    max_batch: usize,
) -> Result<Vec<Envelope<'_>>, ValidationErrors<'_>> {
    let Some(array) = parse_root(body, Kind::Array)? else {
        return Err(ValidationErrors::one(ErrorKind::ListType, LocPath::Whole));
    };
    let count = json::elements(array).count();
    if count == 0 {
        let kind = ErrorKind::TooShort { min: 1, actual: 0 };
        return Err(ValidationErrors::one(kind, LocPath::Whole));
    }
    if count > max_batch {
        // Refused before any item is looked at: its cost must not grow with a refused batch.
        let kind = ErrorKind::TooLong {
            max: max_batch,
            actual: count,
        };
        return Err(ValidationErrors::one(kind, LocPath::Whole));
    }
    let mut errors = ValidationErrors::default();
    let mut scratch = DupScratch::new();
    let mut out = Vec::with_capacity(count);
    for (i, element) in json::elements(array).enumerate() {
        if element.kind != Kind::Object {
            errors.push(ErrorKind::DictType, Some(i), LocPath::Whole);
            continue;
        }
        if let Some(env) = check_item(element.value, Some(i), &mut errors, &mut scratch) {
            if errors.is_empty() {
                out.push(env);
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Body-level checks shared by single and batch bodies: empty, JSON syntax, root kind.
/// `Ok(None)` means valid JSON of the wrong kind.
fn parse_root(body: &[u8], want: Kind) -> Result<Option<&[u8]>, ValidationErrors<'_>> {
    if body.is_empty() {
        // FastAPI reads an empty body as no body at all.
        return Err(ValidationErrors::one(ErrorKind::Missing, LocPath::Whole));
    }
    match json::validate(body) {
        Err(e) => Err(ValidationErrors::one(
            ErrorKind::JsonInvalid,
            LocPath::Offset(e.offset),
        )),
        Ok(kind) if kind == want => Ok(Some(json::trim_ws(body))),
        Ok(_) => Ok(None),
    }
}

/// A string field decoded, or why not.
fn decode_field<const N: usize>(
    value: &[u8],
    kind: Kind,
) -> Result<heapless::String<N>, ErrorKind> {
    if kind != Kind::String {
        return Err(ErrorKind::StringType);
    }
    let mut s = heapless::String::new();
    match json::unescape_into(value, &mut s) {
        Ok(()) => Ok(s),
        Err(UnescapeError::TooLong) => Err(ErrorKind::StringTooLong { max: N }),
        // Malformed cannot happen on validated input; refusing it as non-text is the safe answer.
        Err(UnescapeError::LoneSurrogate | UnescapeError::Malformed) => {
            Err(ErrorKind::StringUnicode)
        }
    }
}

#[derive(Clone, Copy)]
struct Slot<'a> {
    value: &'a [u8],
    kind: Kind,
}

/// Validates one envelope object, pushing its errors; returns the envelope when it had none.
fn check_item<'a>(
    object: &'a [u8],
    item: Option<usize>,
    errors: &mut ValidationErrors<'a>,
    scratch: &mut DupScratch<'a>,
) -> Option<Envelope<'a>> {
    let before = errors.found;
    let mut duplicated = [false; Field::ALL.len()];
    scratch.duplicates(object, |key| {
        if let Some(i) = Field::ALL.iter().position(|f| json::key_is(key, f.name())) {
            if let Some(flag) = duplicated.get_mut(i) {
                *flag = true;
            }
        }
        errors.push(
            ErrorKind::Value(ValueReason::DuplicateKey),
            item,
            LocPath::Key(key),
        );
    });

    let mut slots: [Option<Slot<'a>>; Field::ALL.len()] = [None; Field::ALL.len()];
    for m in json::members(object) {
        if let Some(i) = Field::ALL
            .iter()
            .position(|f| json::key_is(m.key, f.name()))
        {
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(Slot {
                    value: m.value,
                    kind: m.kind,
                });
            }
        }
    }
    let field = |f: Field| -> Option<Slot<'a>> {
        let i = f as usize;
        if duplicated.get(i).copied().unwrap_or(false) {
            // Already reported as a duplicate; which value would count is unknowable.
            None
        } else {
            slots.get(i).copied().flatten()
        }
    };
    let is_dup = |f: Field| duplicated.get(f as usize).copied().unwrap_or(false);
    let mut fail = |kind: ErrorKind, path: LocPath<'a>| errors.push(kind, item, path);

    // user_id: required string, 1–64 bytes, no control characters.
    let user_id = match field(Field::UserId) {
        None if is_dup(Field::UserId) => None,
        None => {
            fail(ErrorKind::Missing, LocPath::Field(Field::UserId));
            None
        }
        Some(slot) => match decode_field::<MAX_USER_ID_BYTES>(slot.value, slot.kind) {
            Err(kind) => {
                fail(kind, LocPath::Field(Field::UserId));
                None
            }
            Ok(s) if s.is_empty() => {
                fail(
                    ErrorKind::StringTooShort { min: 1 },
                    LocPath::Field(Field::UserId),
                );
                None
            }
            Ok(s) if s.chars().any(is_id_control) => {
                fail(
                    ErrorKind::Value(ValueReason::ControlCharacter),
                    LocPath::Field(Field::UserId),
                );
                None
            }
            Ok(s) => Some(s),
        },
    };

    // data: required object; inside it only correlation_id is checked.
    let data = match field(Field::Data) {
        None if is_dup(Field::Data) => None,
        None => {
            fail(ErrorKind::Missing, LocPath::Field(Field::Data));
            None
        }
        Some(slot) if slot.kind != Kind::Object => {
            fail(ErrorKind::DictType, LocPath::Field(Field::Data));
            None
        }
        Some(slot) => {
            let info = DataInfo::scan(slot.value);
            match info.correlation_id {
                None => Some((slot.value, info, None)),
                Some(cid) => match decode_field::<MAX_CORRELATION_ID_BYTES>(cid.value, cid.kind) {
                    Err(kind) => {
                        fail(kind, LocPath::DataCorrelationId);
                        None
                    }
                    Ok(s) if s.is_empty() => {
                        fail(
                            ErrorKind::StringTooShort { min: 1 },
                            LocPath::DataCorrelationId,
                        );
                        None
                    }
                    Ok(s) => Some((slot.value, info, Some(s))),
                },
            }
        }
    };

    let event_type = optional_string::<MAX_EVENT_TYPE_BYTES>(
        field(Field::EventType),
        &['\r', '\n'],
        ValueReason::LineBreak,
    )
    .map(|s| s.filter(|s| !s.is_empty()))
    .map_err(|kind| fail(kind, LocPath::Field(Field::EventType)));

    let event_id = optional_string::<MAX_EVENT_ID_BYTES>(
        field(Field::EventId),
        &['\r', '\n', '\0'],
        ValueReason::LineBreakOrNul,
    )
    .map_err(|kind| fail(kind, LocPath::Field(Field::EventId)));

    let timestamp = match field(Field::Timestamp) {
        None => Ok(None),
        Some(slot) => match slot.kind {
            Kind::Null => Ok(None),
            Kind::Number => Ok(Some(slot.value)),
            _ => {
                fail(ErrorKind::FloatType, LocPath::Field(Field::Timestamp));
                Err(())
            }
        },
    };

    if errors.found != before {
        return None;
    }
    let (user_id, (data, info, correlation_id), event_type, event_id, timestamp) = (
        user_id?,
        data?,
        event_type.ok()?,
        event_id.ok()?,
        timestamp.ok()?,
    );
    Some(Envelope {
        user_id,
        data,
        event_type,
        event_id,
        timestamp,
        correlation_id,
        data_has_user_id: info.has_user_id,
        data_has_original_sender: info.has_original_sender,
        data_timestamp: info.timestamp,
        mention_text: info.mention_text(),
    })
}

/// An optional string field: `null`/absent is `None`; `forbidden` chars are a `value_error`.
fn optional_string<const N: usize>(
    slot: Option<Slot<'_>>,
    forbidden: &[char],
    reason: ValueReason,
) -> Result<Option<heapless::String<N>>, ErrorKind> {
    let Some(slot) = slot.filter(|s| s.kind != Kind::Null) else {
        return Ok(None);
    };
    let s = decode_field::<N>(slot.value, slot.kind)?;
    if s.contains(forbidden) {
        return Err(ErrorKind::Value(reason));
    }
    Ok(Some(s))
}

/// What the splice and the router need from `data`. Duplicate keys inside `data` travel as they
/// are; like a Python dict, the last occurrence is the one that counts.
#[derive(Default)]
struct DataInfo<'a> {
    correlation_id: Option<Slot<'a>>,
    has_user_id: bool,
    has_original_sender: bool,
    timestamp: Option<&'a [u8]>,
    /// message, text, content, body
    texts: [Option<Slot<'a>>; 4],
}

const TEXT_KEYS: [&str; 4] = ["message", "text", "content", "body"];

impl<'a> DataInfo<'a> {
    fn scan(data: &'a [u8]) -> Self {
        let mut info = DataInfo::default();
        for m in json::members(data) {
            let slot = Slot {
                value: m.value,
                kind: m.kind,
            };
            if json::key_is(m.key, "correlation_id") {
                info.correlation_id = Some(slot);
            } else if json::key_is(m.key, "user_id") {
                info.has_user_id = true;
            } else if json::key_is(m.key, "original_sender") {
                info.has_original_sender = true;
            } else if json::key_is(m.key, "timestamp") {
                info.timestamp = Some(m.value);
            } else if let Some(i) = TEXT_KEYS.iter().position(|k| json::key_is(m.key, k)) {
                if let Some(t) = info.texts.get_mut(i) {
                    *t = Some(slot);
                }
            }
        }
        info
    }

    fn mention_text(&self) -> Option<&'a [u8]> {
        self.texts
            .iter()
            .flatten()
            .find(|s| s.kind == Kind::String)
            .map(|s| s.value)
    }
}

/// Appends the frame a device receives: `data` as received, with `"user_id"`,
/// `"correlation_id"` and `"original_sender"` added before the closing brace (in that order,
/// compact, like Starlette's `send_json`) only when `data` lacks them.
///
/// `correlation_id` is the stream's id: `env.correlation_id` when set (then it is not added),
/// else a fresh one.
pub fn write_device_frame(env: &Envelope<'_>, correlation_id: &str, out: &mut Vec<u8>) {
    let Some((&b'}', head)) = env.data.split_last() else {
        // Not an object: cannot happen for a validated envelope; send it untouched.
        out.extend_from_slice(env.data);
        return;
    };
    out.extend_from_slice(head);
    let mut comma = !json::is_empty_object(env.data);
    let mut sep = |out: &mut Vec<u8>| {
        if comma {
            out.push(b',');
        }
        comma = true;
    };
    if !env.data_has_user_id {
        sep(out);
        out.extend_from_slice(b"\"user_id\":");
        json::write_string(out, &env.user_id);
    }
    if env.correlation_id.is_none() {
        sep(out);
        out.extend_from_slice(b"\"correlation_id\":");
        json::write_string(out, correlation_id);
    }
    if !env.data_has_original_sender {
        sep(out);
        out.extend_from_slice(b"\"original_sender\":{\"user_id\":");
        json::write_string(out, &env.user_id);
        out.extend_from_slice(b",\"timestamp\":");
        out.extend_from_slice(env.data_timestamp.or(env.timestamp).unwrap_or(b"null"));
        out.push(b'}');
    }
    out.push(b'}');
}

/// What a device's text frame is, for correlating it with an open `/sse/send` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMessage {
    /// Not JSON.
    Invalid,
    /// JSON, but not an object.
    NotObject,
    /// A JSON object.
    Object {
        /// Top-level `correlation_id` string, else `data.correlation_id` string.
        correlation_id: Option<heapless::String<MAX_CORRELATION_ID_BYTES>>,
        /// Top-level `"is_final": true` or `"type": "final_response"`: the stream ends.
        is_final: bool,
    },
}

/// Classifies a device's text frame (docs/protocol.md §7.5).
///
/// A correlation id that is empty, longer than 128 bytes or not text can match no open stream,
/// so it counts as absent and the `data.correlation_id` fallback applies, as Python's
/// `a or b` did for the empty string.
pub fn classify_device_message(text: &[u8]) -> DeviceMessage {
    match json::validate(text) {
        Err(_) => return DeviceMessage::Invalid,
        Ok(Kind::Object) => {}
        Ok(_) => return DeviceMessage::NotObject,
    }
    let mut top_cid = None;
    let mut data = None;
    let mut is_final = false;
    let mut final_type = false;
    for m in json::members(text) {
        if json::key_is(m.key, "correlation_id") {
            top_cid = Some(m);
        } else if json::key_is(m.key, "data") {
            data = Some(m);
        } else if json::key_is(m.key, "is_final") {
            is_final = m.kind == Kind::True;
        } else if json::key_is(m.key, "type") {
            final_type = m.kind == Kind::String && json::key_is(m.value, "final_response");
        }
    }
    let usable = |m: json::Member<'_>| {
        decode_field::<MAX_CORRELATION_ID_BYTES>(m.value, m.kind)
            .ok()
            .filter(|s| !s.is_empty())
    };
    let correlation_id = top_cid.and_then(usable).or_else(|| {
        let data = data.filter(|d| d.kind == Kind::Object)?;
        let cid = json::members(data.value)
            .filter(|m| json::key_is(m.key, "correlation_id"))
            .last()?;
        usable(cid)
    });
    DeviceMessage::Object {
        correlation_id,
        is_final: is_final || final_type,
    }
}

#[cfg(test)]
mod tests;

//! Protocol limits: the compile-time sizes of what a peer may send. Runtime settings live in
//! `ops::settings`; build capacities in `ops::limits`.

/// Longest user id, in bytes (docs/protocol.md §3.1).
pub const MAX_USER_ID_BYTES: usize = 64;
/// Longest public account name, in bytes (docs/protocol.md §9.2): account names are user ids.
pub const MAX_ACCOUNT_NAME_BYTES: usize = MAX_USER_ID_BYTES;
/// Longest `event_type`, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 64;
/// Longest `event_id`, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 128;
/// Longest correlation id, in bytes.
pub const MAX_CORRELATION_ID_BYTES: usize = 128;
/// Longest request target (path and query), in bytes; longer is 414.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// Largest request head (request line and headers), in bytes; larger is 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one request head; more is 431.
pub const MAX_HEADERS: usize = 64;
/// Deepest nesting accepted in a JSON document (bounds the scanner's work, not its stack).
pub const MAX_JSON_DEPTH: usize = 128;

/// Most errors one 422 answer lists. Without duplicate keys an item yields at most
/// `MAX_FIELD_ERRORS_PER_ITEM`, so every error is listed for batches up to
/// `MAX_VALIDATION_ERRORS / MAX_FIELD_ERRORS_PER_ITEM` items; beyond that (or with thousands of
/// duplicate keys) the list is cut here, which bounds the answer to about 1 MiB.
pub const MAX_VALIDATION_ERRORS: usize = 8192;

/// Most field errors one envelope can produce (user_id, data or data.correlation_id, event_type,
/// event_id, timestamp); duplicate-key errors come on top.
pub const MAX_FIELD_ERRORS_PER_ITEM: usize = 5;

/// Ceiling of the `max_batch` setting: the most items whose errors all fit one 422 answer.
pub const MAX_BATCH_ITEMS: usize = MAX_VALIDATION_ERRORS / MAX_FIELD_ERRORS_PER_ITEM;

const _: () = assert!(MAX_TARGET_BYTES < MAX_HEAD_BYTES);

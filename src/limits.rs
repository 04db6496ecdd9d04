//! Compile-time capacities. Runtime settings (see `config`) must stay at or under these.

/// Slots in the device table. A power of two (heapless index maps require it).
/// Boards override it at build time with `WSSED_DEVICE_TABLE_CAPACITY`.
pub const DEVICE_TABLE_CAPACITY: usize =
    parse_usize_or(option_env!("WSSED_DEVICE_TABLE_CAPACITY"), 16384);

/// Slots in the table of open `/sse/send` streams (correlation ids waiting for answers).
pub const PENDING_TABLE_CAPACITY: usize =
    parse_usize_or(option_env!("WSSED_PENDING_TABLE_CAPACITY"), 4096);

/// Longest user id, in bytes (SPEC §3).
pub const MAX_USER_ID_BYTES: usize = 64;
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
/// Most public accounts (`@mention` targets) in the configuration.
pub const MAX_PUBLIC_ACCOUNTS: usize = 256;
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

const _: () = assert!(DEVICE_TABLE_CAPACITY.is_power_of_two() && DEVICE_TABLE_CAPACITY > 1);
const _: () = assert!(PENDING_TABLE_CAPACITY.is_power_of_two() && PENDING_TABLE_CAPACITY > 1);
const _: () = assert!(MAX_TARGET_BYTES < MAX_HEAD_BYTES);

/// Parses a decimal build-time override, falling back to `default` when unset.
/// A malformed value stops the build (a const panic), never a silent default.
const fn parse_usize_or(value: Option<&str>, default: usize) -> usize {
    let bytes = match value {
        Some(v) => v.as_bytes(),
        None => return default,
    };
    assert!(!bytes.is_empty(), "capacity override is empty");
    let mut n: usize = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        assert!(
            b.is_ascii_digit(),
            "capacity override is not a decimal number"
        );
        n = n * 10 + (b - b'0') as usize;
        i += 1;
    }
    n
}

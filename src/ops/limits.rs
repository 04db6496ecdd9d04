//! Build capacities: the fixed sizes of this build's tables. Runtime settings
//! (`ops::settings`) must stay at or under them; boards set them through `board/<board>/env`.

/// Slots in the device table without a board's override (the build README.md describes).
pub(crate) const DEFAULT_DEVICE_TABLE_CAPACITY: usize = 16384;

/// Slots in the device table. A power of two (heapless index maps require it).
/// Boards override it at build time with `WSSED_DEVICE_TABLE_CAPACITY`.
pub(crate) const DEVICE_TABLE_CAPACITY: usize = parse_usize_or(
    option_env!("WSSED_DEVICE_TABLE_CAPACITY"),
    DEFAULT_DEVICE_TABLE_CAPACITY,
);

/// Stream table slots without a board's override.
pub(crate) const DEFAULT_PENDING_TABLE_CAPACITY: usize = 4096;

/// Slots in the table of open `/sse/send` streams (correlation ids waiting for answers).
pub(crate) const PENDING_TABLE_CAPACITY: usize = parse_usize_or(
    option_env!("WSSED_PENDING_TABLE_CAPACITY"),
    DEFAULT_PENDING_TABLE_CAPACITY,
);

/// HTTP connections allowed beyond `max_connections + max_pending_sends` (health probes,
/// pushes, upgrades in flight) before new ones are answered 503 at once.
pub(crate) const EXTRA_HTTP_CONNECTIONS: usize = 256;

/// True in the build without a board's table sizes: the build README.md's tables describe,
/// whose tables fit every board profile.
#[cfg(test)]
pub(crate) const TABLES_ARE_DEFAULT: bool = DEVICE_TABLE_CAPACITY == DEFAULT_DEVICE_TABLE_CAPACITY
    && PENDING_TABLE_CAPACITY == DEFAULT_PENDING_TABLE_CAPACITY;

/// Most public accounts (`@mention` targets) in the configuration.
pub(crate) const MAX_PUBLIC_ACCOUNTS: usize = 256;

const _: () = assert!(DEVICE_TABLE_CAPACITY.is_power_of_two() && DEVICE_TABLE_CAPACITY > 1);
const _: () = assert!(PENDING_TABLE_CAPACITY.is_power_of_two() && PENDING_TABLE_CAPACITY > 1);

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

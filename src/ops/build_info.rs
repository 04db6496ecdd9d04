//! What this binary is: version, target, linking, board and the compiled table capacities,
//! printed by `wssed --version` so a build can be checked against `board/<board>/env`.

use super::limits::{DEVICE_TABLE_CAPACITY, PENDING_TABLE_CAPACITY};

/// The board profile the build was made for (`WSSED_BOARD` from `board/<board>/env`), or
/// `none` for a build without one (default capacities).
pub const BOARD: &str = match option_env!("WSSED_BOARD") {
    Some(board) => board,
    None => "none",
};

/// The Rust target triple the binary was compiled for (set by build.rs).
pub const TARGET: &str = env!("WSSED_BUILD_TARGET");

/// `static` when the C library is linked in (`+crt-static`), else `dynamic`.
pub const LINK: &str = if cfg!(target_feature = "crt-static") {
    "static"
} else {
    "dynamic"
};

/// The `--version` text: `wssed VERSION`, then one `key: value` line per property.
pub fn text() -> String {
    format!(
        "wssed {}\ntarget: {TARGET}\nlink: {LINK}\nboard: {BOARD}\n\
         device_table_capacity: {DEVICE_TABLE_CAPACITY}\npending_table_capacity: {PENDING_TABLE_CAPACITY}\n",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_after_the_first_is_a_key_and_a_value() {
        let text = text();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(format!("wssed {}", env!("CARGO_PKG_VERSION")).as_str())
        );
        let keys: Vec<&str> = lines
            .map(|l| l.split_once(": ").map_or("", |(k, _)| k))
            .collect();
        assert_eq!(
            keys,
            [
                "target",
                "link",
                "board",
                "device_table_capacity",
                "pending_table_capacity"
            ]
        );
        assert!(text.contains(&format!(
            "\ndevice_table_capacity: {DEVICE_TABLE_CAPACITY}\n"
        )));
    }
}

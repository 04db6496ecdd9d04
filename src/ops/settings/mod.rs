//! Settings (docs/protocol.md §13.1, §16): declared once, in `table.rs`'s `settings!`. From that one
//! table come the [`Config`] struct and its defaults, the TOML keys, the `--kebab-case` flags, the
//! `WSSED_UPPER_SNAKE` environment variables, validation with units, `--help`, the "did you mean"
//! for unknown keys and flags, `--check-config`'s output and README's settings table.
//!
//! Precedence: defaults, then the settings file, then the environment, then flags.

mod bounds;
mod errors;
mod kinds;
mod sources;
mod table;
#[cfg(test)]
mod tests;

pub use bounds::*;
pub use errors::{ConfigError, ErrorKind};
pub use sources::parse_args;
#[cfg(test)]
pub(crate) use sources::parse_args_with_env;
pub use table::{help, secs, Command, Config};

//! Which memory budget is in force, and why (docs/memory.md "The budget").
//!
//! `memory_budget_bytes` when it is set; else derived from the memory limit of the cgroup the
//! daemon runs in (systemd's `MemoryMax=`): the limit, minus what the daemon holds outside
//! the budget with these settings, times the share left once allocator slack and kernel
//! socket buffers are paid for; else a default that fits a 512 MiB board.

use std::fmt;

use super::cgroup::{self, MemoryLimit, NoLimit};
use super::settings::Config;

const MIB: u64 = 1024 * 1024;

/// The budget when no memory limit is found: fits a 512 MiB board.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 256 * MIB;
/// The smallest budget ever derived: below it the daemon could not take a single max-size
/// push, and the settings need lowering (the start log says so).
pub const MIN_DERIVED_BUDGET_BYTES: u64 = 4 * MIB;
/// Resident bytes of the idle daemon outside the budget (binary, libraries, runtime, the
/// tables' touched pages), rounded up from docs/memory.md's measurements.
pub const FIXED_BYTES: u64 = 8 * MIB;
/// Held outside the budget per TCP connection the cap allows: the task, its own read and
/// answer buffers, the socket's state (docs/memory.md; growth past them is charged).
pub const CONNECTION_BYTES: u64 = 16 * 1024;
/// Share, in percent, of what is left under the limit that the budget takes. The rest pays
/// for allocator slack (freed pages the allocator has not returned yet) and the kernel's
/// socket buffers, which the cgroup also counts.
pub const BUDGET_SHARE_PERCENT: u64 = 75;

/// Where the budget in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `memory_budget_bytes`.
    Setting,
    /// Derived from a cgroup memory limit.
    Cgroup {
        /// The limit found.
        limit: MemoryLimit,
        /// What the daemon holds outside the budget with these settings.
        reserve: u64,
        /// The limit leaves less than `MIN_DERIVED_BUDGET_BYTES` for the budget.
        too_small: bool,
    },
    /// No limit found: the default.
    Default(NoLimit),
}

/// The budget in force and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    /// The budget, in bytes.
    pub bytes: u64,
    /// Where it came from.
    pub source: Source,
}

impl fmt::Display for InForce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes ({} MiB), ", self.bytes, self.bytes / MIB)?;
        match &self.source {
            Source::Setting => write!(f, "from memory_budget_bytes"),
            Source::Cgroup {
                limit,
                reserve,
                too_small,
            } => {
                write!(
                    f,
                    "{BUDGET_SHARE_PERCENT}% of the cgroup memory limit {} MiB ({}) less {} MiB \
                     held outside the budget with these settings",
                    limit.bytes / MIB,
                    limit.file.display(),
                    reserve / MIB
                )?;
                if *too_small {
                    write!(
                        f,
                        "; the limit is too small for these settings, using the minimum: lower \
                         max_connections or max_pending_sends, or raise MemoryMax"
                    )?;
                }
                Ok(())
            }
            Source::Default(why) => {
                let why = match why {
                    NoLimit::NoCgroup => "no memory cgroup found".to_owned(),
                    NoLimit::Unlimited => "the cgroup sets no memory limit".to_owned(),
                    NoLimit::Garbage(file) => format!("unreadable limit in {}", file.display()),
                };
                write!(f, "the default ({why})")
            }
        }
    }
}

/// What the daemon holds outside the budget with `config`, at most: everything traffic can
/// make it hold is charged to the budget, so this is the idle daemon and the fixed part of
/// each TCP connection the cap allows.
pub fn reserve_bytes(config: &Config) -> u64 {
    let connections = config.max_open_connections() as u64;
    FIXED_BYTES.saturating_add(connections.saturating_mul(CONNECTION_BYTES))
}

/// The budget for `config` under `limit` (the cgroup's, when one was found).
pub fn derive(config: &Config, limit: Result<MemoryLimit, NoLimit>) -> InForce {
    if let Some(bytes) = config.memory_budget_bytes {
        return InForce {
            bytes: bytes as u64,
            source: Source::Setting,
        };
    }
    match limit {
        Ok(limit) => {
            let reserve = reserve_bytes(config);
            let share = limit.bytes.saturating_sub(reserve) / 100 * BUDGET_SHARE_PERCENT;
            let too_small = share < MIN_DERIVED_BUDGET_BYTES;
            InForce {
                bytes: share.max(MIN_DERIVED_BUDGET_BYTES),
                source: Source::Cgroup {
                    limit,
                    reserve,
                    too_small,
                },
            }
        }
        Err(why) => InForce {
            bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            source: Source::Default(why),
        },
    }
}

/// The budget for `config` where this process runs.
pub fn in_force(config: &Config) -> InForce {
    if config.memory_budget_bytes.is_some() {
        return derive(config, Err(NoLimit::NoCgroup));
    }
    derive(config, cgroup::memory_limit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn limit(bytes: u64) -> MemoryLimit {
        MemoryLimit {
            bytes,
            file: PathBuf::from("/sys/fs/cgroup/system.slice/wssed.service/memory.max"),
        }
    }

    #[test]
    fn the_setting_wins_over_any_limit() {
        let config = Config {
            memory_budget_bytes: Some(12_345),
            ..Config::default()
        };
        let got = derive(&config, Ok(limit(128 * MIB)));
        assert_eq!(got.bytes, 12_345);
        assert_eq!(got.source, Source::Setting);
    }

    #[test]
    fn a_cgroup_limit_leaves_room_for_what_the_settings_hold_outside() {
        let config = Config {
            max_connections: 512,
            max_pending_sends: 256,
            ..Config::default()
        };
        let reserve = reserve_bytes(&config);
        assert_eq!(reserve, FIXED_BYTES + 1024 * CONNECTION_BYTES);
        let got = derive(&config, Ok(limit(128 * MIB)));
        assert_eq!(
            got.bytes,
            (128 * MIB - reserve) / 100 * BUDGET_SHARE_PERCENT
        );
        assert!(got.bytes + reserve < 128 * MIB);
        assert!(
            got.to_string().contains("cgroup memory limit 128 MiB"),
            "{got}"
        );
    }

    #[test]
    fn a_limit_too_small_for_the_settings_gives_the_minimum_and_says_so() {
        let got = derive(&Config::default(), Ok(limit(24 * MIB)));
        assert_eq!(got.bytes, MIN_DERIVED_BUDGET_BYTES);
        assert!(got.to_string().contains("too small"), "{got}");
    }

    #[test]
    fn no_limit_gives_the_default_with_the_reason() {
        for (why, text) in [
            (NoLimit::NoCgroup, "no memory cgroup"),
            (NoLimit::Unlimited, "sets no memory limit"),
            (
                NoLimit::Garbage(PathBuf::from("/x/memory.max")),
                "unreadable limit in /x/memory.max",
            ),
        ] {
            let got = derive(&Config::default(), Err(why));
            assert_eq!(got.bytes, DEFAULT_MEMORY_BUDGET_BYTES);
            assert!(got.to_string().contains(text), "{got}");
        }
    }
}

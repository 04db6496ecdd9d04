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
/// answer buffers, its scratch buffers as kept between requests (at most 2 KiB each), the
/// socket's state (docs/memory.md; growth past them is charged, or freed after its request).
pub const CONNECTION_BYTES: u64 = 16 * 1024;
/// What a device session is charged for its life besides its queued frames and a large
/// inbound message: the task, tungstenite's state and 512-byte read buffer, the queue's link and
/// table entry (an idle device measures 3.9–4.3 KiB,
/// docs/memory.md).
pub const SESSION_BYTES: usize = 8 * 1024;
/// What a device's presence in a cluster is charged besides its session (docs/protocol.md
/// §21.2): the NATS client's subscription, whose message channel allocates its first block of
/// 32 messages of 184 bytes up front, the subscription's entry in the client, its subject and
/// the presence's task (measured about 9.5 KiB per idle device on x86_64, BENCHMARKS.md).
pub const PRESENCE_BYTES: usize = 12 * 1024;
/// The heap's slack over what the budget holds, in percent: the allocator's size classes and
/// the pages it keeps after a burst (docs/memory.md measured 25–45 %).
pub const HEAP_SLACK_PERCENT: u64 = 50;
/// Share, in percent, of what is left under the limit that the budget takes: with the heap's
/// slack on top, a full budget still fits.
pub const BUDGET_SHARE_PERCENT: u64 = 100 * 100 / (100 + HEAP_SLACK_PERCENT);

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
                         max_connections, max_pending_sends or socket_buffer_bytes, or raise \
                         MemoryMax"
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
/// make it hold is charged to the budget, so this is the idle daemon, the fixed part of each
/// TCP connection the cap allows, and each one's kernel buffers (which the cgroup counts too:
/// the kernel doubles `socket_buffer_bytes` for its bookkeeping, in each direction).
pub fn reserve_bytes(config: &Config) -> u64 {
    let connections = config.max_open_connections() as u64;
    let per_connection = CONNECTION_BYTES.saturating_add(4 * config.socket_buffer_bytes as u64);
    FIXED_BYTES.saturating_add(connections.saturating_mul(per_connection))
}

/// The most that live sessions can hold of the budget with `config`: every device connected,
/// stalled, with its queue full, and every stream's buffer full. Work beyond that (new pushes,
/// bodies being read) is what the budget refuses when it is full; board profiles keep this
/// under half their budget (board/README.md).
pub fn live_bytes(config: &Config) -> u64 {
    // A frame or an answer alone always fits, whatever the byte caps.
    let frame = config.queue_bytes.max(config.max_body_bytes) as u64;
    let answers = config.stream_buffer_bytes.max(config.max_message_bytes) as u64;
    // In a cluster, each device is also present there (docs/protocol.md §21.2).
    let presence = if config.cluster_urls.is_empty() {
        0
    } else {
        PRESENCE_BYTES as u64
    };
    (config.max_connections as u64)
        .saturating_mul(SESSION_BYTES as u64 + presence + frame)
        .saturating_add((config.max_pending_sends as u64).saturating_mul(answers))
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
    use crate::ops::limits::TABLES_ARE_DEFAULT;
    use crate::ops::settings::{parse_args_with_env, Command};
    use std::path::PathBuf;

    /// A `MemoryMax=` value (`128M`, `1536M`, `1G`) in bytes.
    fn memory_max(dropin: &str) -> u64 {
        let value = dropin
            .lines()
            .find_map(|l| l.strip_prefix("MemoryMax="))
            .expect("MemoryMax=");
        let (digits, unit) = value.split_at(value.len() - 1);
        let n: u64 = digits.parse().expect("MemoryMax digits");
        n * match unit {
            "K" => 1024,
            "M" => MIB,
            "G" => 1024 * MIB,
            other => panic!("MemoryMax unit {other}"),
        }
    }

    /// Whether `board`'s profile loads in this build: all do in the default build; a board's
    /// own build (scripts/cross-test.sh --unit) loads the profiles built with its table sizes.
    fn fits_this_build(board: &std::path::Path) -> bool {
        use crate::ops::limits::{DEVICE_TABLE_CAPACITY, PENDING_TABLE_CAPACITY};
        if TABLES_ARE_DEFAULT {
            return true;
        }
        let env = std::fs::read_to_string(board.join("env")).unwrap_or_default();
        let size = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.trim().parse::<usize>().ok())
        };
        size("WSSED_DEVICE_TABLE_CAPACITY") == Some(DEVICE_TABLE_CAPACITY)
            && size("WSSED_PENDING_TABLE_CAPACITY") == Some(PENDING_TABLE_CAPACITY)
    }

    /// Every board profile, as its `.deb` installs it: its settings fit its `MemoryMax` by
    /// construction (the budget is derived from it), and what live sessions can hold stays
    /// under half the budget, so new work always has room once hostile clients fill theirs.
    /// Prints board/README.md's table.
    #[test]
    fn every_board_profile_leaves_half_its_budget_to_new_work() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("board");
        let mut boards: Vec<_> = std::fs::read_dir(&root)
            .expect("board/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("wssed.toml").exists())
            .filter(|p| fits_this_build(p))
            .collect();
        boards.sort();
        assert!(!boards.is_empty(), "no board profile fits this build");
        if TABLES_ARE_DEFAULT {
            assert!(boards.len() >= 4, "{boards:?}");
        }
        println!("| board | `MemoryMax` | held outside the budget | budget | live sessions at most | share of the budget | with a cluster: share / `max_connections` that keeps half |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for board in boards {
            let toml = board.join("wssed.toml");
            let args = ["--config", toml.to_str().expect("UTF-8 path")];
            let Ok(Command::Run(config)) = parse_args_with_env(args, |_| None) else {
                panic!("{} does not load", toml.display());
            };
            let dropin = std::fs::read_to_string(board.join("wssed.service.d/board.conf"))
                .expect("board.conf");
            let max = memory_max(&dropin);
            let got = derive(
                &config,
                Ok(MemoryLimit {
                    bytes: max,
                    file: PathBuf::from("memory.max"),
                }),
            );
            let reserve = reserve_bytes(&config);
            let live = live_bytes(&config);
            let name = board.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            assert!(
                !matches!(
                    got.source,
                    Source::Cgroup {
                        too_small: true,
                        ..
                    }
                ),
                "{name}: MemoryMax too small: {got}"
            );
            assert!(reserve + got.bytes < max, "{name}: {got}");
            assert!(
                live * 2 <= got.bytes,
                "{name}: live sessions can hold {} MiB of a {} MiB budget",
                live / MIB,
                got.bytes / MIB
            );
            // The same board in a cluster: each device is also present there. The largest
            // max_connections that keeps half the budget free, the budget derived for it.
            let limit = || {
                Ok(MemoryLimit {
                    bytes: max,
                    file: PathBuf::from("memory.max"),
                })
            };
            let mut clustered = config.clone();
            clustered.cluster_urls = vec!["nats://127.0.0.1:4222".into()];
            let cluster_share = live_bytes(&clustered) * 100 / got.bytes;
            let mut fit = clustered.clone();
            while fit.max_connections > 1 && live_bytes(&fit) * 2 > derive(&fit, limit()).bytes {
                fit.max_connections -= 1;
            }
            assert!(
                live_bytes(&fit) * 2 <= derive(&fit, limit()).bytes && fit.max_connections > 1,
                "{name}: no max_connections keeps half the budget in a cluster"
            );
            assert!(
                live_bytes(&clustered) > live,
                "{name}: presence costs nothing?"
            );
            println!(
                "| `{name}` | {} MiB | {} MiB | {} MiB | {} MiB | {} % | {} % / {} |",
                max / MIB,
                reserve / MIB,
                got.bytes / MIB,
                live / MIB,
                live * 100 / got.bytes,
                cluster_share,
                fit.max_connections
            );
        }
    }

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
        assert_eq!(
            reserve,
            FIXED_BYTES + 1024 * (CONNECTION_BYTES + 4 * config.socket_buffer_bytes as u64)
        );
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

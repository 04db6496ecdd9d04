//! Settings: defaults, TOML file, `--kebab-case` flags, validation (SPEC §1, §10).

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::limits::{DEVICE_TABLE_CAPACITY, MAX_PUBLIC_ACCOUNTS, PENDING_TABLE_CAPACITY};
use crate::wire::limits::{MAX_BATCH_ITEMS, MAX_USER_ID_BYTES};

/// What to do when a user id connects while a session for it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// Keep the old session; close the new one with 1008.
    Reject,
    /// Close the old session with 1008; keep the new one.
    Replace,
}

/// The effective settings of one daemon run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address for HTTP and WebSocket.
    pub listen: SocketAddr,
    /// User ids that `@mentions` route to.
    pub public_accounts: Vec<String>,
    /// Devices connected at once.
    pub max_connections: usize,
    /// Frames waiting for one device's socket.
    pub queue_depth: usize,
    /// Largest HTTP request body.
    pub max_body_bytes: usize,
    /// Largest WebSocket message (and frame) from a device.
    pub max_message_bytes: usize,
    /// Items in one `/sse/push/batch`.
    pub max_batch: usize,
    /// `/sse/send` streams open at once.
    pub max_pending_sends: usize,
    /// A send stream closes after this long without a correlated message.
    pub send_timeout_secs: u64,
    /// Interval of SSE keepalive comments.
    pub keepalive_secs: u64,
    /// Interval of WebSocket pings.
    pub ping_interval_secs: u64,
    /// Time a device has to show life after a ping.
    pub pong_timeout_secs: u64,
    /// Time from the first byte of a request head to its end.
    pub header_timeout_secs: u64,
    /// Time an HTTP connection may sit idle between requests.
    pub idle_timeout_secs: u64,
    /// Drain time on SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Duplicate user id policy.
    pub on_duplicate: OnDuplicate,
    /// Bearer token required on `/sse/*` when set.
    pub api_token: Option<String>,
    /// Key of the HMAC device token required on `/ws` when set.
    pub ws_secret: Option<String>,
    /// Origins allowed to upgrade; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Most verbose log level written.
    pub log_level: log::LevelFilter,
    /// Runtime threads: 1 runs everything on one event loop (tokio's current-thread runtime).
    pub worker_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_accounts: Vec::new(),
            max_connections: 4096,
            queue_depth: 64,
            max_body_bytes: 65536,
            max_message_bytes: 65536,
            max_batch: 1000,
            max_pending_sends: 1024,
            send_timeout_secs: 30,
            keepalive_secs: 15,
            ping_interval_secs: 20,
            pong_timeout_secs: 10,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            shutdown_timeout_secs: 5,
            on_duplicate: OnDuplicate::Reject,
            api_token: None,
            ws_secret: None,
            allowed_origins: Vec::new(),
            log_level: log::LevelFilter::Info,
            worker_threads: DEFAULT_WORKER_THREADS,
        }
    }
}

/// Seconds as a `Duration`, for the `*_secs` settings.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Default `worker_threads`: one event loop (see BENCHMARKS.md for the measurements behind it).
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// Ceiling of `worker_threads`.
pub const MAX_WORKER_THREADS: usize = 64;
/// Longest accepted timeout or interval, in seconds (a day): more is surely a unit mistake.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Ceiling of `max_body_bytes`.
pub const MAX_BODY_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// Ceiling of `max_message_bytes`.
pub const MAX_MESSAGE_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// Ceiling of `queue_depth`, in frames per device.
pub const MAX_QUEUE_DEPTH: usize = 65_536;
/// Ceiling of `max_batch`, in items per request: every item's errors must fit one 422 answer.
pub const MAX_BATCH_CEILING: usize = MAX_BATCH_ITEMS;
/// Most entries in `allowed_origins`.
pub const MAX_ALLOWED_ORIGINS: usize = 64;
/// Longest entry of `allowed_origins`, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 256;
/// Longest `api_token` or `ws_secret`, in bytes.
pub const MAX_SECRET_BYTES: usize = 1024;
/// Largest settings file read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
/// Longest value quoted back in an error line, in characters (keeps the line one screen wide).
const MAX_SHOWN_CHARS: usize = 64;
/// Longest TOML parser message kept in an error line, in characters.
const MAX_TOML_MESSAGE_CHARS: usize = 200;

/// Usage text: every flag with its default and bounds.
pub const HELP: &str = "\
wssed: HTTP to WebSocket bridge for gateways (push, streamed replies over SSE, @mentions)

Usage: wssed [--config FILE] [SETTINGS...]
       wssed --check-config [--config FILE] [SETTINGS...]
       wssed --help | --version

  -h, --help                  print this text and exit
  -V, --version               print the version and exit
      --config FILE           read settings from a TOML file, keys in snake_case (queue_depth = 64);
                              at most 1 MiB; unknown keys are errors
      --check-config          validate, print the effective settings as TOML (secrets as \"***\",
                              unset ones left out) and exit 0

Settings: each is a flag and a TOML key of the same name. Flags override the file, the file
overrides defaults; `--flag VALUE` and `--flag=VALUE` both work; a repeated flag: the last wins.
Counts, sizes and timeouts are whole numbers >= 1. Lists are comma separated on the command
line (--public-accounts ci_bot,deploy_bot) and arrays of strings in the file.

  --listen ADDR               IP address:port for HTTP and WebSocket, e.g. [::]:8080
                              (default 0.0.0.0:8080)
  --public-accounts LIST      user ids that @mentions route to; each 1-64 of [A-Za-z0-9_],
                              no repeats, at most 256 (default none)
  --max-connections N         devices connected at once; at most the build's device table
                              capacity, 16384 unless built otherwise (default 4096)
  --queue-depth N             frames waiting for one device's socket; at most 65536 (default 64)
  --max-body-bytes N          largest HTTP request body; at most 67108864 = 64 MiB (default 65536)
  --max-message-bytes N       largest WebSocket message or frame from a device; at most
                              67108864 = 64 MiB (default 65536)
  --max-batch N               items in one /sse/push/batch; at most 1638 (default 1000)
  --max-pending-sends N       /sse/send streams open at once; at most the build's pending table
                              capacity, 4096 unless built otherwise (default 1024)
  --send-timeout-secs N       a /sse/send stream ends after this long without a reply (default 30)
  --keepalive-secs N          interval of SSE keepalive comments (default 15)
  --ping-interval-secs N      interval of WebSocket pings (default 20)
  --pong-timeout-secs N       time a device has to show life after a ping (default 10)
  --header-timeout-secs N     time for a request head to arrive, from its first byte (default 10)
  --idle-timeout-secs N       idle HTTP keep-alive connections close after this (default 60)
  --shutdown-timeout-secs N   drain time on SIGTERM (default 5)
                              (every *-secs setting: at most 86400, a day)
  --on-duplicate POLICY       a user id connecting twice: reject (close the new session) or
                              replace (close the old one) (default reject)
  --api-token TOKEN           when set, /sse/* needs Authorization: Bearer TOKEN; visible ASCII,
                              no spaces, at most 1024 bytes (default unset)
  --ws-secret SECRET          when set, /ws needs token=hex(HMAC-SHA256(SECRET, user_id));
                              at most 1024 bytes (default unset)
  --allowed-origins LIST      when non-empty, WebSocket upgrades from other Origins get 403; each
                              scheme://host[:port] or null, at most 64 (default none)
  --log-level LEVEL           error, warn, info, debug or trace (default info)
  --worker-threads N          runtime threads; 1 runs one event loop (current-thread runtime),
                              more a work-stealing pool; at most 64 (default 1)

Exit status: 0 on success; 2 on a bad flag, setting or settings file.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start the daemon with these settings.
    Run(Config),
    /// Print these (valid) settings and exit 0.
    CheckConfig(Config),
    /// Print `HELP` and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// A bad command line, settings file or setting: one line naming the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: Option<&'static str>,
    origin: Origin,
    kind: ErrorKind,
}

/// Where the bad text came from; shown so the operator knows what to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// The command line, outside any setting.
    CommandLine,
    /// A setting's flag.
    Flag,
    /// The settings file, with the 1-based line when known.
    File { path: String, line: Option<usize> },
    /// The merged settings (validation).
    Settings,
}

/// Why a command line, settings file or setting was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A flag `--help` does not list.
    UnknownFlag(String),
    /// A word that is neither a flag nor a flag's value.
    UnexpectedArgument(String),
    /// A flag that needs a value came last.
    MissingValue(String),
    /// A flag that takes no value was given one (`--check-config=yes`).
    UnexpectedValue(String),
    /// The settings file could not be opened or read.
    Unreadable(String),
    /// The settings file is over `MAX_CONFIG_FILE_BYTES`.
    FileTooLarge {
        /// The ceiling, in bytes.
        max_bytes: u64,
    },
    /// The settings file is not UTF-8 (TOML must be).
    NotUtf8,
    /// The settings file is not valid TOML.
    Syntax(String),
    /// A key in the settings file that is not a setting.
    UnknownKey(String),
    /// A TOML value of the wrong type.
    WrongType {
        /// What the setting takes.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// Text or a fraction where a whole number belongs.
    NotWholeNumber(String),
    /// A number outside the setting's bounds.
    OutOfRange {
        /// The value given, as written.
        got: String,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// `listen` that is not an IP address with a port.
    NotSocketAddress(String),
    /// A word outside the setting's choices.
    NotOneOf {
        /// The value given.
        got: String,
        /// The choices, as a phrase.
        choices: &'static str,
    },
    /// A public account name outside 1–64 of `[A-Za-z0-9_]`.
    BadAccountName(String),
    /// A list entry given twice.
    DuplicateEntry(String),
    /// A list longer than its ceiling.
    TooManyEntries {
        /// The ceiling.
        max: usize,
    },
    /// An `allowed_origins` entry that no `Origin` header could ever match.
    BadOrigin {
        /// The entry.
        got: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A secret set to the empty string (it would match nothing or everything).
    EmptySecret,
    /// A secret over `MAX_SECRET_BYTES`.
    SecretTooLong {
        /// The ceiling, in bytes.
        max_bytes: usize,
    },
    /// An `api_token` with bytes a header value cannot carry verbatim.
    BadTokenChar,
}

impl ConfigError {
    /// The setting at fault (snake_case TOML key), when the error is about one.
    pub fn key(&self) -> Option<&'static str> {
        self.key
    }

    /// Why it was refused.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    fn command_line(kind: ErrorKind) -> Self {
        ConfigError {
            key: None,
            origin: Origin::CommandLine,
            kind,
        }
    }

    fn file(path: &str, line: Option<usize>, key: Option<&'static str>, kind: ErrorKind) -> Self {
        ConfigError {
            key,
            origin: Origin::File {
                path: path.to_owned(),
                line,
            },
            kind,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{path}:{line}: ")?,
            Origin::File { path, line: None } => write!(f, "{path}: ")?,
            Origin::CommandLine | Origin::Flag | Origin::Settings => {}
        }
        if let Some(key) = self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.kind)?;
        if let (Origin::Flag, Some(key)) = (&self.origin, self.key) {
            write!(f, " (from --{})", key.replace('_', "-"))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::UnknownFlag(flag) => write!(f, "unknown flag `{flag}` (see --help)"),
            ErrorKind::UnexpectedArgument(arg) => {
                write!(f, "unexpected argument `{arg}` (see --help)")
            }
            ErrorKind::MissingValue(flag) => write!(f, "`{flag}` needs a value"),
            ErrorKind::UnexpectedValue(flag) => write!(f, "`{flag}` takes no value"),
            ErrorKind::Unreadable(why) => write!(f, "cannot read the settings file: {why}"),
            ErrorKind::FileTooLarge { max_bytes } => {
                write!(f, "the settings file is larger than {max_bytes} bytes")
            }
            ErrorKind::NotUtf8 => write!(f, "the settings file is not UTF-8"),
            ErrorKind::Syntax(why) => write!(f, "invalid TOML: {why}"),
            ErrorKind::UnknownKey(key) => write!(f, "unknown key `{key}`"),
            ErrorKind::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ErrorKind::NotWholeNumber(got) => write!(f, "expected a whole number, found `{got}`"),
            ErrorKind::OutOfRange { got, min, max } => {
                write!(f, "must be a whole number from {min} to {max}, got {got}")
            }
            ErrorKind::NotSocketAddress(got) => write!(
                f,
                "`{got}` is not an IP address with a port (like 0.0.0.0:8080 or [::]:8080)"
            ),
            ErrorKind::NotOneOf { got, choices } => write!(f, "`{got}` is not one of {choices}"),
            ErrorKind::BadAccountName(got) => {
                write!(f, "`{got}` is not 1-{MAX_USER_ID_BYTES} of [A-Za-z0-9_]")
            }
            ErrorKind::DuplicateEntry(got) => write!(f, "`{got}` is listed twice"),
            ErrorKind::TooManyEntries { max } => write!(f, "more than {max} entries"),
            ErrorKind::BadOrigin { got, why } => write!(f, "`{got}` {why}"),
            ErrorKind::EmptySecret => write!(f, "must not be empty when set"),
            ErrorKind::SecretTooLong { max_bytes } => {
                write!(f, "is longer than {max_bytes} bytes")
            }
            ErrorKind::BadTokenChar => write!(
                f,
                "must be visible ASCII without spaces (it travels in an Authorization header)"
            ),
        }
    }
}

/// A value quoted back in an error line: escaped, and cut so the line stays short.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_SHOWN_CHARS).collect::<String>();
    out = out.escape_debug().to_string();
    if text.chars().nth(MAX_SHOWN_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// One setting; the table every other part (flags, file, checks, output) is driven by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Listen,
    PublicAccounts,
    MaxConnections,
    QueueDepth,
    MaxBodyBytes,
    MaxMessageBytes,
    MaxBatch,
    MaxPendingSends,
    SendTimeoutSecs,
    KeepaliveSecs,
    PingIntervalSecs,
    PongTimeoutSecs,
    HeaderTimeoutSecs,
    IdleTimeoutSecs,
    ShutdownTimeoutSecs,
    OnDuplicate,
    ApiToken,
    WsSecret,
    AllowedOrigins,
    LogLevel,
    WorkerThreads,
}

/// Every setting, in the order of SPEC §1 (and of `to_toml`).
const KEYS: [Key; 21] = [
    Key::Listen,
    Key::PublicAccounts,
    Key::MaxConnections,
    Key::QueueDepth,
    Key::MaxBodyBytes,
    Key::MaxMessageBytes,
    Key::MaxBatch,
    Key::MaxPendingSends,
    Key::SendTimeoutSecs,
    Key::KeepaliveSecs,
    Key::PingIntervalSecs,
    Key::PongTimeoutSecs,
    Key::HeaderTimeoutSecs,
    Key::IdleTimeoutSecs,
    Key::ShutdownTimeoutSecs,
    Key::OnDuplicate,
    Key::ApiToken,
    Key::WsSecret,
    Key::AllowedOrigins,
    Key::LogLevel,
    Key::WorkerThreads,
];

const LEVEL_CHOICES: &str = "error, warn, info, debug, trace";

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Listen => "listen",
            Key::PublicAccounts => "public_accounts",
            Key::MaxConnections => "max_connections",
            Key::QueueDepth => "queue_depth",
            Key::MaxBodyBytes => "max_body_bytes",
            Key::MaxMessageBytes => "max_message_bytes",
            Key::MaxBatch => "max_batch",
            Key::MaxPendingSends => "max_pending_sends",
            Key::SendTimeoutSecs => "send_timeout_secs",
            Key::KeepaliveSecs => "keepalive_secs",
            Key::PingIntervalSecs => "ping_interval_secs",
            Key::PongTimeoutSecs => "pong_timeout_secs",
            Key::HeaderTimeoutSecs => "header_timeout_secs",
            Key::IdleTimeoutSecs => "idle_timeout_secs",
            Key::ShutdownTimeoutSecs => "shutdown_timeout_secs",
            Key::OnDuplicate => "on_duplicate",
            Key::ApiToken => "api_token",
            Key::WsSecret => "ws_secret",
            Key::AllowedOrigins => "allowed_origins",
            Key::LogLevel => "log_level",
            Key::WorkerThreads => "worker_threads",
        }
    }

    /// The setting whose `--kebab-case` flag this is (snake_case flags are not accepted).
    fn from_flag(flag: &str) -> Option<Key> {
        let rest = flag.strip_prefix("--")?;
        KEYS.into_iter().find(|key| {
            let name = key.name();
            name.len() == rest.len()
                && name
                    .bytes()
                    .zip(rest.bytes())
                    .all(|(n, r)| if n == b'_' { r == b'-' } else { n == r })
        })
    }

    /// Inclusive bounds of a numeric setting; `None` for the others.
    fn bounds(self) -> Option<(u64, u64)> {
        // usize -> u64 never truncates on the targets Rust supports (usize is at most 64 bits).
        let count = |max: usize| Some((1, max as u64));
        match self {
            Key::MaxConnections => count(DEVICE_TABLE_CAPACITY),
            Key::QueueDepth => count(MAX_QUEUE_DEPTH),
            Key::MaxBodyBytes => count(MAX_BODY_BYTES_CEILING),
            Key::MaxMessageBytes => count(MAX_MESSAGE_BYTES_CEILING),
            Key::MaxBatch => count(MAX_BATCH_CEILING),
            Key::MaxPendingSends => count(PENDING_TABLE_CAPACITY),
            Key::WorkerThreads => count(MAX_WORKER_THREADS),
            Key::SendTimeoutSecs
            | Key::KeepaliveSecs
            | Key::PingIntervalSecs
            | Key::PongTimeoutSecs
            | Key::HeaderTimeoutSecs
            | Key::IdleTimeoutSecs
            | Key::ShutdownTimeoutSecs => Some((1, MAX_TIMEOUT_SECS)),
            Key::Listen
            | Key::PublicAccounts
            | Key::OnDuplicate
            | Key::ApiToken
            | Key::WsSecret
            | Key::AllowedOrigins
            | Key::LogLevel => None,
        }
    }

    /// Ceiling on entries of a list setting, checked while the list is read.
    fn max_entries(self) -> usize {
        match self {
            Key::PublicAccounts => MAX_PUBLIC_ACCOUNTS,
            _ => MAX_ALLOWED_ORIGINS,
        }
    }
}

/// A setting's value as given: flag text, or a TOML value from the file.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Flag(&'a str),
    File(&'a Value),
}

fn toml_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn whole_number(raw: Raw<'_>, (min, max): (u64, u64)) -> Result<u64, ErrorKind> {
    let n: i128 = match raw {
        Raw::Flag(text) => match text.parse::<i128>() {
            Ok(n) => n,
            Err(e) => {
                return Err(match e.kind() {
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                        ErrorKind::OutOfRange {
                            got: shown(text),
                            min,
                            max,
                        }
                    }
                    _ => ErrorKind::NotWholeNumber(shown(text)),
                });
            }
        },
        Raw::File(Value::Integer(n)) => i128::from(*n),
        Raw::File(Value::Float(x)) => return Err(ErrorKind::NotWholeNumber(x.to_string())),
        Raw::File(other) => {
            return Err(ErrorKind::WrongType {
                expected: "a whole number",
                found: toml_type(other),
            })
        }
    };
    match u64::try_from(n) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ErrorKind::OutOfRange {
            got: n.to_string(),
            min,
            max,
        }),
    }
}

fn text(raw: Raw<'_>) -> Result<&str, ErrorKind> {
    match raw {
        Raw::Flag(text) => Ok(text),
        Raw::File(Value::String(text)) => Ok(text),
        Raw::File(other) => Err(ErrorKind::WrongType {
            expected: "a string",
            found: toml_type(other),
        }),
    }
}

fn list(raw: Raw<'_>, max_entries: usize) -> Result<Vec<String>, ErrorKind> {
    let mut out = Vec::new();
    let mut push = |item: &str| {
        if out.len() == max_entries {
            return Err(ErrorKind::TooManyEntries { max: max_entries });
        }
        out.push(item.to_owned());
        Ok(())
    };
    match raw {
        // An empty flag value clears the list (overriding the file).
        Raw::Flag(text) if text.trim().is_empty() => {}
        Raw::Flag(text) => text.split(',').try_for_each(|item| push(item.trim()))?,
        Raw::File(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => push(s)?,
                    other => {
                        return Err(ErrorKind::WrongType {
                            expected: "an array of strings",
                            found: toml_type(other),
                        })
                    }
                }
            }
        }
        Raw::File(other) => {
            return Err(ErrorKind::WrongType {
                expected: "an array of strings",
                found: toml_type(other),
            })
        }
    }
    Ok(out)
}

fn level_name(level: log::LevelFilter) -> &'static str {
    match level {
        log::LevelFilter::Off => "off",
        log::LevelFilter::Error => "error",
        log::LevelFilter::Warn => "warn",
        log::LevelFilter::Info => "info",
        log::LevelFilter::Debug => "debug",
        log::LevelFilter::Trace => "trace",
    }
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn is_account_name(name: &str) -> bool {
    (1..=MAX_USER_ID_BYTES).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_visible_ascii(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

fn check_unique(items: &[String]) -> Result<(), ErrorKind> {
    // Lists are capped at a few hundred entries, so the quadratic scan stays cheap.
    for (i, item) in items.iter().enumerate() {
        if items.iter().take(i).any(|earlier| earlier == item) {
            return Err(ErrorKind::DuplicateEntry(shown(item)));
        }
    }
    Ok(())
}

fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin.is_empty() {
        return Err("is empty");
    }
    if origin.len() > MAX_ORIGIN_BYTES {
        return Err("is longer than 256 bytes");
    }
    if !is_visible_ascii(origin) {
        return Err("must be visible ASCII without spaces");
    }
    // Sandboxed documents send the literal `null`; listing it is the operator's call.
    if origin == "null" {
        return Ok(());
    }
    match origin.split_once("://") {
        Some((scheme, host)) if !scheme.is_empty() && !host.is_empty() => {
            if host.contains(['/', '?', '#']) {
                Err("has a path; an Origin is only scheme://host[:port]")
            } else {
                Ok(())
            }
        }
        _ => Err("is not scheme://host[:port] or null"),
    }
}

fn check_secret(secret: Option<&str>, header_safe: bool) -> Result<(), ErrorKind> {
    let Some(secret) = secret else {
        return Ok(());
    };
    if secret.is_empty() {
        Err(ErrorKind::EmptySecret)
    } else if secret.len() > MAX_SECRET_BYTES {
        Err(ErrorKind::SecretTooLong {
            max_bytes: MAX_SECRET_BYTES,
        })
    } else if header_safe && !is_visible_ascii(secret) {
        Err(ErrorKind::BadTokenChar)
    } else {
        Ok(())
    }
}

impl Config {
    /// The effective settings as TOML, secrets shown as "***", unset secrets left out.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            if let Some(value) = self.toml_value(key) {
                out.push_str(key.name());
                out.push_str(" = ");
                out.push_str(&value);
                out.push('\n');
            }
        }
        out
    }

    /// Checks ranges and cross-field rules; Err names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for key in KEYS {
            self.check(key).map_err(|kind| ConfigError {
                key: Some(key.name()),
                origin: Origin::Settings,
                kind,
            })?;
        }
        Ok(())
    }

    fn check(&self, key: Key) -> Result<(), ErrorKind> {
        if let Some((min, max)) = key.bounds() {
            let n = self.number(key);
            return if (min..=max).contains(&n) {
                Ok(())
            } else {
                Err(ErrorKind::OutOfRange {
                    got: n.to_string(),
                    min,
                    max,
                })
            };
        }
        match key {
            Key::PublicAccounts => {
                if self.public_accounts.len() > MAX_PUBLIC_ACCOUNTS {
                    return Err(ErrorKind::TooManyEntries {
                        max: MAX_PUBLIC_ACCOUNTS,
                    });
                }
                if let Some(bad) = self.public_accounts.iter().find(|n| !is_account_name(n)) {
                    return Err(ErrorKind::BadAccountName(shown(bad)));
                }
                check_unique(&self.public_accounts)
            }
            Key::AllowedOrigins => {
                if self.allowed_origins.len() > MAX_ALLOWED_ORIGINS {
                    return Err(ErrorKind::TooManyEntries {
                        max: MAX_ALLOWED_ORIGINS,
                    });
                }
                for origin in &self.allowed_origins {
                    check_origin(origin).map_err(|why| ErrorKind::BadOrigin {
                        got: shown(origin),
                        why,
                    })?;
                }
                check_unique(&self.allowed_origins)
            }
            Key::ApiToken => check_secret(self.api_token.as_deref(), true),
            Key::WsSecret => check_secret(self.ws_secret.as_deref(), false),
            // `Off` is representable in the type but not a documented choice, and would not
            // read back from `to_toml`.
            Key::LogLevel if self.log_level == log::LevelFilter::Off => Err(ErrorKind::NotOneOf {
                got: "off".to_owned(),
                choices: LEVEL_CHOICES,
            }),
            _ => Ok(()),
        }
    }

    /// A numeric setting's value; 0 for the others (never asked).
    fn number(&self, key: Key) -> u64 {
        match key {
            Key::MaxConnections => self.max_connections as u64,
            Key::QueueDepth => self.queue_depth as u64,
            Key::MaxBodyBytes => self.max_body_bytes as u64,
            Key::MaxMessageBytes => self.max_message_bytes as u64,
            Key::MaxBatch => self.max_batch as u64,
            Key::MaxPendingSends => self.max_pending_sends as u64,
            Key::WorkerThreads => self.worker_threads as u64,
            Key::SendTimeoutSecs => self.send_timeout_secs,
            Key::KeepaliveSecs => self.keepalive_secs,
            Key::PingIntervalSecs => self.ping_interval_secs,
            Key::PongTimeoutSecs => self.pong_timeout_secs,
            Key::HeaderTimeoutSecs => self.header_timeout_secs,
            Key::IdleTimeoutSecs => self.idle_timeout_secs,
            Key::ShutdownTimeoutSecs => self.shutdown_timeout_secs,
            _ => 0,
        }
    }

    /// Stores a numeric setting already checked against its bounds.
    fn set_number(&mut self, key: Key, n: u64) {
        // The bounds keep every count under the 32-bit usize of ARMv7 boards.
        let count = usize::try_from(n).unwrap_or(usize::MAX);
        match key {
            Key::MaxConnections => self.max_connections = count,
            Key::QueueDepth => self.queue_depth = count,
            Key::MaxBodyBytes => self.max_body_bytes = count,
            Key::MaxMessageBytes => self.max_message_bytes = count,
            Key::MaxBatch => self.max_batch = count,
            Key::MaxPendingSends => self.max_pending_sends = count,
            Key::WorkerThreads => self.worker_threads = count,
            Key::SendTimeoutSecs => self.send_timeout_secs = n,
            Key::KeepaliveSecs => self.keepalive_secs = n,
            Key::PingIntervalSecs => self.ping_interval_secs = n,
            Key::PongTimeoutSecs => self.pong_timeout_secs = n,
            Key::HeaderTimeoutSecs => self.header_timeout_secs = n,
            Key::IdleTimeoutSecs => self.idle_timeout_secs = n,
            Key::ShutdownTimeoutSecs => self.shutdown_timeout_secs = n,
            _ => {}
        }
    }

    /// Reads one setting; type and bound errors here, the rest in `validate`.
    fn set(&mut self, key: Key, raw: Raw<'_>) -> Result<(), ErrorKind> {
        if let Some(bounds) = key.bounds() {
            let n = whole_number(raw, bounds)?;
            self.set_number(key, n);
            return Ok(());
        }
        match key {
            Key::Listen => {
                let addr = text(raw)?;
                self.listen = addr
                    .parse()
                    .map_err(|_| ErrorKind::NotSocketAddress(shown(addr)))?;
            }
            Key::PublicAccounts => self.public_accounts = list(raw, key.max_entries())?,
            Key::AllowedOrigins => self.allowed_origins = list(raw, key.max_entries())?,
            Key::OnDuplicate => {
                self.on_duplicate = match text(raw)? {
                    "reject" => OnDuplicate::Reject,
                    "replace" => OnDuplicate::Replace,
                    other => {
                        return Err(ErrorKind::NotOneOf {
                            got: shown(other),
                            choices: "reject, replace",
                        })
                    }
                }
            }
            Key::ApiToken => self.api_token = Some(text(raw)?.to_owned()),
            Key::WsSecret => self.ws_secret = Some(text(raw)?.to_owned()),
            Key::LogLevel => {
                self.log_level = match text(raw)? {
                    "error" => log::LevelFilter::Error,
                    "warn" => log::LevelFilter::Warn,
                    "info" => log::LevelFilter::Info,
                    "debug" => log::LevelFilter::Debug,
                    "trace" => log::LevelFilter::Trace,
                    other => {
                        return Err(ErrorKind::NotOneOf {
                            got: shown(other),
                            choices: LEVEL_CHOICES,
                        })
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A setting as a TOML value; `None` leaves the key out (unset secrets).
    fn toml_value(&self, key: Key) -> Option<String> {
        if key.bounds().is_some() {
            return Some(self.number(key).to_string());
        }
        let masked = |secret: &Option<String>| secret.as_ref().map(|_| toml_string("***"));
        match key {
            Key::Listen => Some(toml_string(&self.listen.to_string())),
            Key::PublicAccounts => Some(toml_array(&self.public_accounts)),
            Key::AllowedOrigins => Some(toml_array(&self.allowed_origins)),
            Key::OnDuplicate => Some(toml_string(match self.on_duplicate {
                OnDuplicate::Reject => "reject",
                OnDuplicate::Replace => "replace",
            })),
            Key::ApiToken => masked(&self.api_token),
            Key::WsSecret => masked(&self.ws_secret),
            Key::LogLevel => Some(toml_string(level_name(self.log_level))),
            _ => None,
        }
    }

    /// Applies the settings of a TOML document; `path` only labels errors.
    fn apply_toml(&mut self, doc: &str, path: &str) -> Result<(), ConfigError> {
        let file: FileSettings = toml::from_str(doc).map_err(|e| toml_error(&e, doc, path))?;
        for (key, value) in file.entries() {
            if let Some(value) = value {
                self.set(key, Raw::File(value.get_ref())).map_err(|kind| {
                    let line = line_of(doc, value.span().start);
                    ConfigError::file(path, line, Some(key.name()), kind)
                })?;
            }
        }
        Ok(())
    }
}

/// The settings file. Values stay loosely typed so that a wrong one is reported by key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<Spanned<Value>>,
    public_accounts: Option<Spanned<Value>>,
    max_connections: Option<Spanned<Value>>,
    queue_depth: Option<Spanned<Value>>,
    max_body_bytes: Option<Spanned<Value>>,
    max_message_bytes: Option<Spanned<Value>>,
    max_batch: Option<Spanned<Value>>,
    max_pending_sends: Option<Spanned<Value>>,
    send_timeout_secs: Option<Spanned<Value>>,
    keepalive_secs: Option<Spanned<Value>>,
    ping_interval_secs: Option<Spanned<Value>>,
    pong_timeout_secs: Option<Spanned<Value>>,
    header_timeout_secs: Option<Spanned<Value>>,
    idle_timeout_secs: Option<Spanned<Value>>,
    shutdown_timeout_secs: Option<Spanned<Value>>,
    on_duplicate: Option<Spanned<Value>>,
    api_token: Option<Spanned<Value>>,
    ws_secret: Option<Spanned<Value>>,
    allowed_origins: Option<Spanned<Value>>,
    log_level: Option<Spanned<Value>>,
    worker_threads: Option<Spanned<Value>>,
}

impl FileSettings {
    fn entries(&self) -> [(Key, Option<&Spanned<Value>>); 21] {
        [
            (Key::Listen, self.listen.as_ref()),
            (Key::PublicAccounts, self.public_accounts.as_ref()),
            (Key::MaxConnections, self.max_connections.as_ref()),
            (Key::QueueDepth, self.queue_depth.as_ref()),
            (Key::MaxBodyBytes, self.max_body_bytes.as_ref()),
            (Key::MaxMessageBytes, self.max_message_bytes.as_ref()),
            (Key::MaxBatch, self.max_batch.as_ref()),
            (Key::MaxPendingSends, self.max_pending_sends.as_ref()),
            (Key::SendTimeoutSecs, self.send_timeout_secs.as_ref()),
            (Key::KeepaliveSecs, self.keepalive_secs.as_ref()),
            (Key::PingIntervalSecs, self.ping_interval_secs.as_ref()),
            (Key::PongTimeoutSecs, self.pong_timeout_secs.as_ref()),
            (Key::HeaderTimeoutSecs, self.header_timeout_secs.as_ref()),
            (Key::IdleTimeoutSecs, self.idle_timeout_secs.as_ref()),
            (
                Key::ShutdownTimeoutSecs,
                self.shutdown_timeout_secs.as_ref(),
            ),
            (Key::OnDuplicate, self.on_duplicate.as_ref()),
            (Key::ApiToken, self.api_token.as_ref()),
            (Key::WsSecret, self.ws_secret.as_ref()),
            (Key::AllowedOrigins, self.allowed_origins.as_ref()),
            (Key::LogLevel, self.log_level.as_ref()),
            (Key::WorkerThreads, self.worker_threads.as_ref()),
        ]
    }
}

/// The 1-based line holding byte `offset` of `doc`.
fn line_of(doc: &str, offset: usize) -> Option<usize> {
    let before = doc.as_bytes().get(..offset)?;
    Some(before.iter().filter(|&&b| b == b'\n').count() + 1)
}

/// toml's error, condensed to one line (its `Display` draws a multi-line snippet).
fn toml_error(error: &toml::de::Error, doc: &str, path: &str) -> ConfigError {
    let line = error.span().and_then(|span| line_of(doc, span.start));
    let message = error.message();
    // serde words it "unknown field `x`, expected one of ..."; the list is in --help.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let kind = match unknown {
        Some(name) => ErrorKind::UnknownKey(shown(name)),
        None => {
            let words: Vec<&str> = message.split_whitespace().collect();
            let mut one_line: String = words.join(" ");
            if one_line.chars().count() > MAX_TOML_MESSAGE_CHARS {
                one_line = one_line.chars().take(MAX_TOML_MESSAGE_CHARS).collect();
                one_line.push('…');
            }
            ErrorKind::Syntax(one_line)
        }
    };
    ConfigError::file(path, line, None, kind)
}

/// Reads and applies a settings file, refusing files over `MAX_CONFIG_FILE_BYTES`.
fn apply_file(config: &mut Config, path: &str) -> Result<(), ConfigError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CONFIG_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| ConfigError::file(path, None, None, ErrorKind::Unreadable(e.to_string())))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::file(
            path,
            None,
            None,
            ErrorKind::FileTooLarge {
                max_bytes: MAX_CONFIG_FILE_BYTES,
            },
        ));
    }
    let doc = String::from_utf8(bytes)
        .map_err(|_| ConfigError::file(path, None, None, ErrorKind::NotUtf8))?;
    config.apply_toml(&doc, path)
}

/// Parses flags (without argv[0]); `--config FILE` is read (TOML) first, then flags override it,
/// then validation.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    let mut config_path: Option<String> = None;
    let mut check_only = false;
    let mut flags: Vec<(Key, String)> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg.as_str(), None),
        };
        let no_value = || match inline {
            Some(_) => Err(ConfigError::command_line(ErrorKind::UnexpectedValue(
                name.to_owned(),
            ))),
            None => Ok(()),
        };
        match name {
            "-h" | "--help" => return no_value().map(|()| Command::Help),
            "-V" | "--version" => return no_value().map(|()| Command::Version),
            "--check-config" => {
                no_value()?;
                check_only = true;
            }
            _ => {
                let key = match name {
                    "--config" => None,
                    _ if name.starts_with('-') && name != "-" => {
                        Some(Key::from_flag(name).ok_or_else(|| {
                            ConfigError::command_line(ErrorKind::UnknownFlag(shown(name)))
                        })?)
                    }
                    _ => {
                        return Err(ConfigError::command_line(ErrorKind::UnexpectedArgument(
                            shown(name),
                        )))
                    }
                };
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => args.next().ok_or_else(|| {
                        ConfigError::command_line(ErrorKind::MissingValue(name.to_owned()))
                    })?,
                };
                match key {
                    Some(key) => flags.push((key, value)),
                    None => config_path = Some(value),
                }
            }
        }
    }
    let mut config = Config::default();
    if let Some(path) = &config_path {
        apply_file(&mut config, path)?;
    }
    for (key, value) in &flags {
        config
            .set(*key, Raw::Flag(value))
            .map_err(|kind| ConfigError {
                key: Some(key.name()),
                origin: Origin::Flag,
                kind,
            })?;
    }
    config.validate()?;
    Ok(if check_only {
        Command::CheckConfig(config)
    } else {
        Command::Run(config)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn run(words: &[&str]) -> Config {
        match parse_args(args(words)) {
            Ok(Command::Run(config)) => config,
            other => panic!("{words:?}: expected Run, got {other:?}"),
        }
    }

    fn fail(words: &[&str]) -> ConfigError {
        match parse_args(args(words)) {
            Err(e) => {
                let line = e.to_string();
                assert!(!line.contains('\n'), "not one line: {line:?}");
                e
            }
            Ok(other) => panic!("{words:?}: expected an error, got {other:?}"),
        }
    }

    /// A settings file that is removed when the test ends.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(contents: &[u8]) -> TempFile {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("wssed-config-test-{}-{n}.toml", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn from_toml(doc: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_toml(doc, "test.toml")?;
        Ok(config)
    }

    #[test]
    fn defaults_are_the_spec_table() {
        let c = run(&[]);
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert!(c.public_accounts.is_empty());
        assert_eq!(
            (
                c.max_connections,
                c.queue_depth,
                c.max_body_bytes,
                c.max_message_bytes
            ),
            (4096, 64, 65536, 65536)
        );
        assert_eq!((c.max_batch, c.max_pending_sends), (1000, 1024));
        assert_eq!(
            (
                c.send_timeout_secs,
                c.keepalive_secs,
                c.ping_interval_secs,
                c.pong_timeout_secs
            ),
            (30, 15, 20, 10)
        );
        assert_eq!(
            (
                c.header_timeout_secs,
                c.idle_timeout_secs,
                c.shutdown_timeout_secs
            ),
            (10, 60, 5)
        );
        assert_eq!(c.on_duplicate, OnDuplicate::Reject);
        assert_eq!(
            (c.api_token.as_deref(), c.ws_secret.as_deref()),
            (None, None)
        );
        assert!(c.allowed_origins.is_empty());
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn every_key_is_a_flag_and_a_file_key() {
        let file = TempFile::new(
            b"listen = \"127.0.0.1:1\"\npublic_accounts = [\"bot\"]\nmax_connections = 2\n\
queue_depth = 3\nmax_body_bytes = 4\nmax_message_bytes = 5\nmax_batch = 6\n\
max_pending_sends = 7\nsend_timeout_secs = 8\nkeepalive_secs = 9\nping_interval_secs = 10\n\
pong_timeout_secs = 11\nheader_timeout_secs = 12\nidle_timeout_secs = 13\n\
shutdown_timeout_secs = 14\non_duplicate = \"replace\"\napi_token = \"tok\"\n\
ws_secret = \"sec\"\nallowed_origins = [\"https://a.example\"]\nlog_level = \"debug\"\n\
worker_threads = 3\n",
        );
        let from_file = run(&["--config", file.path()]);
        let from_flags = run(&[
            "--listen=127.0.0.1:1",
            "--public-accounts=bot",
            "--max-connections=2",
            "--queue-depth=3",
            "--max-body-bytes=4",
            "--max-message-bytes=5",
            "--max-batch=6",
            "--max-pending-sends=7",
            "--send-timeout-secs=8",
            "--keepalive-secs=9",
            "--ping-interval-secs=10",
            "--pong-timeout-secs=11",
            "--header-timeout-secs=12",
            "--idle-timeout-secs=13",
            "--shutdown-timeout-secs=14",
            "--on-duplicate=replace",
            "--api-token=tok",
            "--ws-secret=sec",
            "--allowed-origins=https://a.example",
            "--log-level=debug",
            "--worker-threads=3",
        ]);
        let expected = Config {
            listen: "127.0.0.1:1".parse().unwrap(),
            public_accounts: vec!["bot".into()],
            max_connections: 2,
            queue_depth: 3,
            max_body_bytes: 4,
            max_message_bytes: 5,
            max_batch: 6,
            max_pending_sends: 7,
            send_timeout_secs: 8,
            keepalive_secs: 9,
            ping_interval_secs: 10,
            pong_timeout_secs: 11,
            header_timeout_secs: 12,
            idle_timeout_secs: 13,
            shutdown_timeout_secs: 14,
            on_duplicate: OnDuplicate::Replace,
            api_token: Some("tok".into()),
            ws_secret: Some("sec".into()),
            allowed_origins: vec!["https://a.example".into()],
            log_level: log::LevelFilter::Debug,
            worker_threads: 3,
        };
        assert_eq!(from_file, expected);
        assert_eq!(from_flags, expected);
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = TempFile::new(b"queue_depth = 10\nmax_batch = 5\npublic_accounts = [\"a\"]\n");
        let c = run(&["--config", file.path(), "--queue-depth", "20"]);
        assert_eq!((c.queue_depth, c.max_batch), (20, 5));
        assert_eq!(c.public_accounts, ["a"]);
        assert_eq!(c.keepalive_secs, Config::default().keepalive_secs);
        // Position does not matter: a flag before --config still wins.
        let c = run(&["--queue-depth", "20", "--config", file.path()]);
        assert_eq!((c.queue_depth, c.max_batch), (20, 5));
        // An empty list flag clears the file's list.
        let c = run(&["--config", file.path(), "--public-accounts="]);
        assert!(c.public_accounts.is_empty());
    }

    #[test]
    fn the_last_repeated_flag_wins() {
        assert_eq!(
            run(&["--queue-depth", "1", "--queue-depth", "2"]).queue_depth,
            2
        );
        assert_eq!(
            run(&["--queue-depth=3", "--queue-depth", "4"]).queue_depth,
            4
        );
        let c = run(&["--public-accounts", "a,b", "--public-accounts", "c"]);
        assert_eq!(c.public_accounts, ["c"]);
        let first = TempFile::new(b"max_batch = 7\n");
        let second = TempFile::new(b"queue_depth = 8\n");
        let c = run(&["--config", first.path(), "--config", second.path()]);
        assert_eq!((c.max_batch, c.queue_depth), (1000, 8));
    }

    #[test]
    fn equals_form_takes_the_rest_of_the_word() {
        let c = run(&["--listen=[::1]:9000", "--api-token=abc=def"]);
        assert_eq!(c.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(c.api_token.as_deref(), Some("abc=def"));
        let c = run(&["--listen", "[::]:8080"]);
        assert_eq!(c.listen, "[::]:8080".parse().unwrap());
    }

    #[test]
    fn a_bad_flag_value_names_its_key() {
        let cases: [(&str, &str); 21] = [
            ("listen", "localhost:8080"),
            ("public_accounts", "ok,not-ok"),
            ("max_connections", "0"),
            ("queue_depth", "-1"),
            ("max_body_bytes", "1.5"),
            ("max_message_bytes", "lots"),
            ("max_batch", "0"),
            ("max_pending_sends", "0"),
            ("send_timeout_secs", "0"),
            ("keepalive_secs", "86401"),
            ("ping_interval_secs", ""),
            ("pong_timeout_secs", "0"),
            ("header_timeout_secs", "0"),
            ("idle_timeout_secs", "0"),
            (
                "shutdown_timeout_secs",
                "99999999999999999999999999999999999999999",
            ),
            ("on_duplicate", "keep"),
            ("api_token", ""),
            ("ws_secret", ""),
            ("allowed_origins", "example.com"),
            ("log_level", "verbose"),
            ("worker_threads", "65"),
        ];
        let names: Vec<&str> = cases.iter().map(|(k, _)| *k).collect();
        let all: Vec<&str> = KEYS.iter().map(|k| k.name()).collect();
        assert_eq!(names, all, "every key has a case");
        for (key, bad) in cases {
            let flag = format!("--{}", key.replace('_', "-"));
            for words in [
                vec![flag.clone(), bad.to_owned()],
                vec![format!("{flag}={bad}")],
            ] {
                let e = parse_args(words.clone()).unwrap_err();
                assert_eq!(e.key(), Some(key), "{words:?}: {e}");
                let line = e.to_string();
                assert!(line.starts_with(&format!("{key}: ")), "{line}");
                assert!(!line.contains('\n'));
            }
        }
    }

    #[test]
    fn a_bad_file_value_names_its_key_and_line() {
        for key in KEYS {
            let doc = format!("# settings\n{} = {{ nested = 1 }}\n", key.name());
            let e = from_toml(&doc).unwrap_err();
            assert_eq!(e.key(), Some(key.name()));
            let line = e.to_string();
            assert!(
                line.starts_with(&format!("test.toml:2: {}: expected ", key.name())),
                "{line}"
            );
            assert!(line.ends_with("found a table"), "{line}");
        }
        let e = from_toml("queue_depth = \"64\"").unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::WrongType {
                expected: "a whole number",
                found: "a string"
            }
        );
        let e = from_toml("queue_depth = -3").unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::OutOfRange { got, .. } if got == "-3"));
        let e = from_toml("queue_depth = 2.0").unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::NotWholeNumber(_)));
        let e = from_toml("public_accounts = [\"a\", 3]").unwrap_err();
        assert_eq!(e.key(), Some("public_accounts"));
        let e = from_toml("public_accounts = \"a,b\"").unwrap_err();
        assert_eq!(e.key(), Some("public_accounts"));
    }

    #[test]
    fn a_value_checked_after_merging_names_its_key() {
        let file = TempFile::new(b"queue_depth = 0\n");
        let e = fail(&["--config", file.path()]);
        assert_eq!(e.key(), Some("queue_depth"));
        let file = TempFile::new(b"public_accounts = [\"a b\"]\n");
        let e = fail(&["--config", file.path()]);
        assert_eq!(e.key(), Some("public_accounts"));
        assert_eq!(
            e.to_string(),
            "public_accounts: `a b` is not 1-64 of [A-Za-z0-9_]"
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let e = from_toml("queue_depth = 1\nqueu_depth = 3\n").unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::UnknownKey("queu_depth".into()));
        assert_eq!(e.to_string(), "test.toml:2: unknown key `queu_depth`");
        let e = from_toml("[server]\nlisten = \"0.0.0.0:1\"\n").unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::UnknownKey("server".into()));
    }

    #[test]
    fn unknown_flags_and_stray_words_are_errors() {
        for flag in ["--queu-depth", "--queue_depth", "-x", "--", "--QUEUE-DEPTH"] {
            let e = fail(&[flag, "1"]);
            assert!(
                matches!(e.kind(), ErrorKind::UnknownFlag(f) if f == flag),
                "{e}"
            );
            assert_eq!(e.key(), None);
        }
        let e = fail(&["stray"]);
        assert_eq!(e.kind(), &ErrorKind::UnexpectedArgument("stray".into()));
        let e = fail(&["--queue-depth", "3", "4"]);
        assert_eq!(e.kind(), &ErrorKind::UnexpectedArgument("4".into()));
        let e = fail(&["--listen"]);
        assert_eq!(e.kind(), &ErrorKind::MissingValue("--listen".into()));
        let e = fail(&["--config"]);
        assert_eq!(e.kind(), &ErrorKind::MissingValue("--config".into()));
        let e = fail(&["--check-config=yes"]);
        assert_eq!(
            e.kind(),
            &ErrorKind::UnexpectedValue("--check-config".into())
        );
        // The value of a mistyped flag is never echoed (it may be a secret).
        let e = fail(&["--api-tokn=hunter2"]);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn commands() {
        assert_eq!(parse_args(args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse_args(args(&["-h"])), Ok(Command::Help));
        assert_eq!(parse_args(args(&["--version"])), Ok(Command::Version));
        assert_eq!(parse_args(args(&["-V"])), Ok(Command::Version));
        assert_eq!(
            parse_args(args(&["--check-config"])),
            Ok(Command::CheckConfig(Config::default()))
        );
        let file = TempFile::new(b"max_batch = 9\n");
        match parse_args(args(&["--check-config", "--config", file.path()])) {
            Ok(Command::CheckConfig(c)) => assert_eq!(c.max_batch, 9),
            other => panic!("{other:?}"),
        }
        // A bad setting is an error for --check-config too (exit 2, not a printout).
        let e = fail(&["--check-config", "--queue-depth", "0"]);
        assert_eq!(e.key(), Some("queue_depth"));
    }

    #[test]
    fn comma_lists() {
        let c = run(&["--public-accounts", "ci_bot,deploy_bot"]);
        assert_eq!(c.public_accounts, ["ci_bot", "deploy_bot"]);
        let c = run(&["--public-accounts", " a , b "]);
        assert_eq!(c.public_accounts, ["a", "b"]);
        let c = run(&[
            "--allowed-origins",
            "https://a.example,http://b.example:8080,null",
        ]);
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "http://b.example:8080", "null"]
        );
        let e = fail(&["--public-accounts", "a,,b"]);
        assert_eq!(e.kind(), &ErrorKind::BadAccountName(String::new()));
        let e = fail(&["--public-accounts", "a,b,a"]);
        assert_eq!(e.kind(), &ErrorKind::DuplicateEntry("a".into()));
        let long = "x".repeat(65);
        let e = fail(&["--public-accounts", &long]);
        assert_eq!(e.key(), Some("public_accounts"));
        let ok = "x".repeat(64);
        assert_eq!(run(&["--public-accounts", &ok]).public_accounts, [ok]);
    }

    #[test]
    fn origins_must_be_matchable() {
        for bad in [
            "example.com",
            "https://example.com/",
            "https://example.com/path",
            "://x",
            "https://",
            "https://exa mple.com",
        ] {
            let e = fail(&["--allowed-origins", bad]);
            assert_eq!(e.key(), Some("allowed_origins"), "{bad}");
            assert!(
                matches!(e.kind(), ErrorKind::BadOrigin { .. }),
                "{bad}: {e}"
            );
        }
        let many: Vec<String> = (0..=MAX_ALLOWED_ORIGINS)
            .map(|i| format!("https://h{i}.example"))
            .collect();
        let e = fail(&["--allowed-origins", &many.join(",")]);
        assert_eq!(
            e.kind(),
            &ErrorKind::TooManyEntries {
                max: MAX_ALLOWED_ORIGINS
            }
        );
    }

    #[test]
    fn secrets_are_checked_without_being_shown() {
        let e = fail(&["--api-token", "has space"]);
        assert_eq!(e.kind(), &ErrorKind::BadTokenChar);
        assert!(!e.to_string().contains("has space"));
        let long = "k".repeat(MAX_SECRET_BYTES + 1);
        let e = fail(&["--ws-secret", &long]);
        assert_eq!(e.key(), Some("ws_secret"));
        assert!(!e.to_string().contains(&long));
        // Any bytes make an HMAC key.
        assert_eq!(
            run(&["--ws-secret", "with space é"]).ws_secret.as_deref(),
            Some("with space é")
        );
    }

    #[test]
    fn secrets_are_masked_and_unset_ones_absent() {
        let c = run(&["--api-token", "s3cret-token", "--ws-secret", "hmac-key"]);
        let out = c.to_toml();
        assert!(out.contains("api_token = \"***\"\n"), "{out}");
        assert!(out.contains("ws_secret = \"***\"\n"), "{out}");
        assert!(!out.contains("s3cret-token") && !out.contains("hmac-key"));
        let out = Config::default().to_toml();
        assert!(
            !out.contains("api_token") && !out.contains("ws_secret"),
            "{out}"
        );
        assert!(out.contains("listen = \"0.0.0.0:8080\"\n"), "{out}");
        assert!(out.contains("public_accounts = []\n"), "{out}");
    }

    #[test]
    fn to_toml_reads_back_as_the_same_config() {
        let mut c = Config::default();
        assert_eq!(from_toml(&c.to_toml()), Ok(c.clone()));
        c = run(&[
            "--listen=[::]:9443",
            "--public-accounts=ci_bot,deploy_bot",
            "--max-connections=8",
            "--queue-depth=2",
            "--max-body-bytes=1024",
            "--max-message-bytes=2048",
            "--max-batch=3",
            "--max-pending-sends=4",
            "--send-timeout-secs=86400",
            "--keepalive-secs=1",
            "--ping-interval-secs=2",
            "--pong-timeout-secs=3",
            "--header-timeout-secs=4",
            "--idle-timeout-secs=5",
            "--shutdown-timeout-secs=6",
            "--on-duplicate=replace",
            "--allowed-origins=https://a.example,null",
            "--log-level=trace",
        ]);
        assert_eq!(from_toml(&c.to_toml()), Ok(c.clone()));
        // Escaping: strings TOML must quote survive the trip.
        c.allowed_origins = vec!["https://q\"b\\s".into(), "tab\there\u{1}".into()];
        assert_eq!(from_toml(&c.to_toml()), Ok(c.clone()));
        // Masked secrets read back as the mask, not the secret.
        c.api_token = Some("real".into());
        let back = from_toml(&c.to_toml()).unwrap();
        assert_eq!(back.api_token.as_deref(), Some("***"));
        assert_eq!(back.ws_secret, None);
    }

    #[test]
    fn numeric_bounds_follow_compile_time_capacities() {
        let cap = DEVICE_TABLE_CAPACITY.to_string();
        let over = (DEVICE_TABLE_CAPACITY + 1).to_string();
        assert_eq!(
            run(&["--max-connections", &cap]).max_connections,
            DEVICE_TABLE_CAPACITY
        );
        let e = fail(&["--max-connections", &over]);
        assert_eq!(
            e.kind(),
            &ErrorKind::OutOfRange {
                got: over.clone(),
                min: 1,
                max: DEVICE_TABLE_CAPACITY as u64
            }
        );
        let cap = PENDING_TABLE_CAPACITY.to_string();
        let over = (PENDING_TABLE_CAPACITY + 1).to_string();
        assert_eq!(
            run(&["--max-pending-sends", &cap]).max_pending_sends,
            PENDING_TABLE_CAPACITY
        );
        assert_eq!(
            fail(&["--max-pending-sends", &over]).key(),
            Some("max_pending_sends")
        );

        let names: Vec<String> = (0..=MAX_PUBLIC_ACCOUNTS)
            .map(|i| format!("bot{i}"))
            .collect();
        let fits = names[..MAX_PUBLIC_ACCOUNTS].join(",");
        assert_eq!(
            run(&["--public-accounts", &fits]).public_accounts.len(),
            MAX_PUBLIC_ACCOUNTS
        );
        let e = fail(&["--public-accounts", &names.join(",")]);
        assert_eq!(e.key(), Some("public_accounts"));
        assert_eq!(
            e.kind(),
            &ErrorKind::TooManyEntries {
                max: MAX_PUBLIC_ACCOUNTS
            }
        );
        // validate() catches what was built in code, not parsed.
        let c = Config {
            public_accounts: names,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key(), Some("public_accounts"));
        let c = Config {
            max_connections: DEVICE_TABLE_CAPACITY + 1,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key(), Some("max_connections"));
    }

    #[test]
    fn every_number_has_a_floor_of_one_and_a_ceiling() {
        for key in KEYS {
            let Some((min, max)) = key.bounds() else {
                continue;
            };
            let flag = format!("--{}", key.name().replace('_', "-"));
            assert_eq!(min, 1);
            let c = run(&[&flag, &max.to_string()]);
            assert_eq!(c.number(key), max);
            assert_eq!(run(&[&flag, "1"]).number(key), 1);
            for bad in ["0".to_owned(), (max + 1).to_string()] {
                let e = fail(&[&flag, &bad]);
                assert_eq!(e.key(), Some(key.name()));
                assert!(
                    matches!(e.kind(), ErrorKind::OutOfRange { got, .. } if *got == bad),
                    "{e}"
                );
            }
        }
        assert_eq!(Key::MaxBodyBytes.bounds(), Some((1, 64 * 1024 * 1024)));
        assert_eq!(Key::IdleTimeoutSecs.bounds(), Some((1, 86_400)));
    }

    #[test]
    fn log_level_off_is_refused() {
        let c = Config {
            log_level: log::LevelFilter::Off,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key(), Some("log_level"));
        assert_eq!(fail(&["--log-level", "off"]).key(), Some("log_level"));
    }

    #[test]
    fn file_problems_name_the_file() {
        let missing = std::env::temp_dir().join("wssed-config-test-does-not-exist.toml");
        let missing = missing.to_str().unwrap();
        let e = fail(&["--config", missing]);
        assert!(matches!(e.kind(), ErrorKind::Unreadable(_)));
        assert!(
            e.to_string()
                .starts_with(&format!("{missing}: cannot read")),
            "{e}"
        );

        let file = TempFile::new(b"max_batch = 5\nqueue_depth = \n");
        let e = fail(&["--config", file.path()]);
        assert!(matches!(e.kind(), ErrorKind::Syntax(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2: invalid TOML: ", file.path())),
            "{e}"
        );

        let file = TempFile::new(b"queue_depth = 1\nqueue_depth = 2\n");
        assert!(matches!(
            fail(&["--config", file.path()]).kind(),
            ErrorKind::Syntax(_)
        ));

        let file = TempFile::new(b"listen = \"\xff\"\n");
        assert_eq!(fail(&["--config", file.path()]).kind(), &ErrorKind::NotUtf8);

        let mut big = b"# padding\n".repeat(usize::try_from(MAX_CONFIG_FILE_BYTES).unwrap() / 10);
        big.extend_from_slice(b"# over\n");
        let file = TempFile::new(&big);
        assert_eq!(
            fail(&["--config", file.path()]).kind(),
            &ErrorKind::FileTooLarge {
                max_bytes: MAX_CONFIG_FILE_BYTES
            }
        );
    }

    #[test]
    fn errors_quote_long_values_briefly() {
        let long = "y".repeat(1000);
        let e = fail(&["--on-duplicate", &long]);
        assert!(e.to_string().len() < 200, "{e}");
        assert_eq!(shown("a\nb"), "a\\nb");
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let defaults = Config::default();
        for key in KEYS {
            let flag = format!("  --{} ", key.name().replace('_', "-"));
            let start = HELP
                .find(&flag)
                .unwrap_or_else(|| panic!("{flag} missing from HELP"));
            let rest = &HELP[start + flag.len()..];
            let entry = &rest[..rest.find("\n  --").unwrap_or(rest.len())];
            let default = match defaults.toml_value(key) {
                None => "unset".to_owned(),
                Some(v) if v == "[]" => "none".to_owned(),
                Some(v) => v.trim_matches('"').to_owned(),
            };
            assert!(
                entry.contains(&format!("(default {default})")),
                "{flag}: {entry}"
            );
        }
        for flag in [
            "--help",
            "-h",
            "--version",
            "-V",
            "--config FILE",
            "--check-config",
        ] {
            assert!(HELP.contains(flag), "{flag}");
        }
        for bound in [
            "86400", "67108864", "65536", "1638", "16384", "4096", "256", "1024",
        ] {
            assert!(HELP.contains(bound), "{bound}");
        }
    }
}

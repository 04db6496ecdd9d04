//! The table of settings (the `settings!` invocation below): each setting declared here and
//! nowhere else, with what is derived from the table: `--help`, README's table, the names
//! sources.rs reads and suggests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::bounds::*;
use super::errors::{closest, ConfigError, ErrorKind, Origin};
use super::kinds::{
    Address, Count, Dir, FilePath, Kind, List, ListOf, Listen, NodeName, OffOr, Optional, Raw,
    Secret, Secs, Switch, LEVELS, POLICIES,
};
use crate::ops::limits::{
    DEVICE_TABLE_CAPACITY, EXTRA_HTTP_CONNECTIONS, MAX_PUBLIC_ACCOUNTS, PENDING_TABLE_CAPACITY,
};
use crate::wire::limits::MAX_BATCH_ITEMS;

/// The smaller of two counts: a default never exceeds the build's table capacity (a board
/// built with a small table starts without a settings file).
const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

/// Seconds as a `Duration`, for the `*_secs` settings.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What the table knows of one setting, for `--help`, `--check-config` and the README.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The setting's name (its TOML key).
    pub(super) name: &'static str,
    /// Its one-line meaning.
    pub(super) help: &'static str,
    /// What `--help` shows for its value.
    pub(super) metavar: &'static str,
    /// Its accepted range, when it has one.
    pub(super) bounds: Option<String>,
    /// Its default, as shown.
    pub(super) default: String,
    /// Its value in TOML; `None` when unset.
    pub(super) toml: Option<String>,
}

/// The table of settings: each line is one setting, declared here and nowhere else.
///
/// `/// HELP` (one line: what it means), then `NAME: TYPE = DEFAULT, KIND;` where KIND reads,
/// checks and describes the value (`kinds.rs`).
macro_rules! settings {
    ($( #[doc = $help:literal] $name:ident: $ty:ty = $default:expr, $kind:expr; )+) => {
        /// The effective settings of one daemon run.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( #[doc = $help] pub $name: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )+ }
            }
        }

        /// Every setting's name, in table order.
        pub(super) const NAMES: &[&str] = &[$( stringify!($name), )+];

        impl Config {
            /// Reads setting `name` from `raw`; `None` when `name` is no setting.
            fn set(&mut self, name: &str, raw: Raw<'_>) -> Option<Result<(), ErrorKind>> {
                Some(match name {
                    $( stringify!($name) => $kind.read(raw).map(|v| self.$name = v), )+
                    _ => return None,
                })
            }

            /// Checks every value, in table order; Err names the first bad key.
            pub fn validate(&self) -> Result<(), ConfigError> {
                $(
                    $kind.check(&self.$name).map_err(|kind| ConfigError {
                        key: Some(stringify!($name)),
                        origin: Origin::Settings,
                        kind,
                    })?;
                )+
                self.check_together()
            }

            /// The table's description of every setting, with this config's values.
            pub(super) fn entries(&self) -> Vec<Entry> {
                vec![$(
                    Entry {
                        name: stringify!($name),
                        help: $help.trim(),
                        metavar: $kind.metavar(),
                        bounds: $kind.bounds(),
                        default: $kind.shown_default(&Config::default().$name),
                        toml: $kind.toml(&self.$name),
                    },
                )+]
            }
        }
    };
}

settings! {
    /// address:port for HTTP and WebSocket, one port for both (e.g. [::]:8080)
    listen: Option<SocketAddr> = Some(SocketAddr::from(([0, 0, 0, 0], 8080))), Listen;
    /// address:port for HTTPS and WSS, the same routes as listen (builds with the tls feature; needs tls_cert_file and tls_key_file)
    tls_listen: Option<SocketAddr> = None, Optional(Address);
    /// PEM file: the server certificate, then its chain; read at start and on SIGHUP
    tls_cert_file: Option<PathBuf> = None, Optional(FilePath);
    /// PEM file: the certificate's private key (PKCS#8, RSA or EC); read at start and on SIGHUP
    tls_key_file: Option<PathBuf> = None, Optional(FilePath);
    /// a TLS handshake must finish within this, from accept (TLS slowloris)
    tls_handshake_timeout_secs: u64 = 10, Secs;
    /// user ids that @mentions route to
    public_accounts: Vec<String> = Vec::new(),
        List { of: ListOf::AccountNames, max: MAX_PUBLIC_ACCOUNTS };
    /// devices connected at once; at most the build's device table capacity
    max_connections: usize = min(4096, DEVICE_TABLE_CAPACITY), Count { max: DEVICE_TABLE_CAPACITY, unit: "devices" };
    /// frames waiting for one device's socket
    queue_depth: usize = 64, Count { max: MAX_QUEUE_DEPTH, unit: "frames" };
    /// bytes of frames waiting for one device's socket (a frame alone always fits)
    queue_bytes: usize = 262_144, Count { max: MAX_BUFFER_BYTES_CEILING, unit: "bytes" };
    /// largest HTTP request body
    max_body_bytes: usize = 65_536, Count { max: MAX_BODY_BYTES_CEILING, unit: "bytes" };
    /// largest WebSocket message (and frame) from a device
    max_message_bytes: usize = 65_536, Count { max: MAX_MESSAGE_BYTES_CEILING, unit: "bytes" };
    /// items in one /sse/push/batch (every item's errors fit one 422 answer)
    max_batch: usize = 1000, Count { max: MAX_BATCH_ITEMS, unit: "items" };
    /// /sse/send streams open at once; at most the build's stream table capacity
    max_pending_sends: usize = min(1024, PENDING_TABLE_CAPACITY), Count { max: PENDING_TABLE_CAPACITY, unit: "streams" };
    /// bytes of device answers held for one /sse/send stream whose caller reads slowly (an answer alone always fits)
    stream_buffer_bytes: usize = 262_144, Count { max: MAX_BUFFER_BYTES_CEILING, unit: "bytes" };
    /// the kernel's send and receive buffer of each connection (SO_SNDBUF, SO_RCVBUF; the kernel doubles it): bounds the kernel memory a stalled peer pins
    socket_buffer_bytes: usize = 16_384, Count { max: MAX_SOCKET_BUFFER_BYTES, unit: "bytes" };
    /// bytes traffic may make the daemon hold in all (queued frames, stream buffers, request bodies, answers, device sessions); unset: derived from the cgroup memory limit, else 256 MiB (docs/memory.md)
    memory_budget_bytes: Option<usize> = None,
        Optional(Count { max: MAX_MEMORY_BUDGET_BYTES, unit: "bytes" });
    /// a /sse/send stream ends after this long without a correlated message
    send_timeout_secs: u64 = 30, Secs;
    /// interval of SSE keepalive comments on open streams
    keepalive_secs: u64 = 15, Secs;
    /// interval of WebSocket pings
    ping_interval_secs: u64 = 20, Secs;
    /// no sign of life this long after a ping, or a write to the device stalled this long: the session ends
    pong_timeout_secs: u64 = 10, Secs;
    /// a request head must arrive within this, from its first byte (slowloris)
    header_timeout_secs: u64 = 10, Secs;
    /// a request body must arrive within this, from the end of its head
    body_timeout_secs: u64 = 10, Secs;
    /// idle keep-alive connections close after this
    idle_timeout_secs: u64 = 60, Secs;
    /// each write of an answer or an SSE event to an upstream must finish within this
    write_timeout_secs: u64 = 60, Secs;
    /// drain time on SIGTERM
    shutdown_timeout_secs: u64 = 5, Secs;
    /// messages kept for one device while it is away, delivered in order when it returns (docs/protocol.md §20); 0 turns the mailbox off
    mailbox_messages: usize = 0, OffOr(Count { max: MAX_MAILBOX_MESSAGES, unit: "messages" });
    /// bytes of frames kept for one device while it is away; the oldest give way to a newer one
    mailbox_bytes: usize = 65_536, Count { max: MAX_BUFFER_BYTES_CEILING, unit: "bytes" };
    /// a kept message older than this (wall clock, across restarts) is dropped, never delivered
    mailbox_ttl_secs: u64 = 3600, Secs;
    /// where the mailbox is written on a clean stop and read at start (systemd StateDirectory=); unset: kept in memory only
    state_dir: Option<PathBuf> = None, Optional(Dir);
    /// a user id connecting twice: reject (close the new session) or replace (close the old one)
    on_duplicate: OnDuplicate = OnDuplicate::Reject, POLICIES;
    /// when set, /sse/* needs Authorization: Bearer TOKEN, else 401
    api_token: Option<String> = None, Secret { header_safe: true };
    /// when set, /ws needs token=hex(HMAC-SHA256(ws_secret, user_id)), else 401
    ws_secret: Option<String> = None, Secret { header_safe: false };
    /// when non-empty, a WebSocket upgrade whose Origin is not listed gets 403
    allowed_origins: Vec<String> = Vec::new(),
        List { of: ListOf::Origins, max: MAX_ALLOWED_ORIGINS };
    /// browser pages of these origins may call the HTTP endpoints (CORS, docs/protocol.md §17); empty: no CORS headers
    cors_allowed_origins: Vec<String> = Vec::new(),
        List { of: ListOf::CorsOrigins, max: MAX_ALLOWED_ORIGINS };
    /// serve the status page at / (docs/protocol.md §18); false: / is 404
    status_page: bool = false, Switch;
    /// most verbose log level written
    log_level: log::LevelFilter = log::LevelFilter::Info, LEVELS;
    /// runtime threads; 1 runs one event loop (tokio's current-thread runtime), more a pool
    worker_threads: usize = DEFAULT_WORKER_THREADS, Count { max: MAX_WORKER_THREADS, unit: "threads" };
    /// NATS servers of the cluster this node joins (builds with the cluster feature; README "Scaling past one gateway")
    cluster_urls: Vec<String> = Vec::new(),
        List { of: ListOf::ClusterUrls, max: MAX_CLUSTER_URLS };
    /// when set, the token this node presents to the NATS servers
    cluster_token: Option<String> = None, Secret { header_safe: true };
    /// this node's name in the cluster (logs, /health, peers); unset: the host name
    node_name: Option<String> = None, NodeName;
    /// a request to another node (a push waits there until the frame is on the device's socket) is answered within this, else 503 cluster_unavailable
    cluster_timeout_secs: u64 = 15, Secs;
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start the daemon with these settings.
    Run(Config),
    /// Print these (valid) settings and exit 0.
    CheckConfig(Config),
    /// Print [`help`] and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// The flag of setting `name`.
pub(super) fn flag_of(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

/// The environment variable of setting `name`.
pub(super) fn env_of(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_ascii_uppercase())
}

/// Column where `--help` starts a flag's description.
const HELP_COLUMN: usize = 30;
/// Width `--help` wraps at.
pub(super) const HELP_WIDTH: usize = 96;

/// The usage text: every flag with its bounds and default.
pub fn help() -> String {
    let mut out = String::from(
        "\
wssed: HTTP to WebSocket bridge for gateways (push, streamed replies over SSE, @mentions)

Usage: wssed [--config FILE] [SETTINGS...]
       wssed --check-config [--config FILE] [SETTINGS...]
       wssed --help | --version

  -h, --help                  print this text and exit
  -V, --version               print the version, target, board and table capacities; exit
      --config FILE           read settings from a TOML file, keys in snake_case
                              (queue_depth = 64); at most 1 MiB; unknown keys are errors
      --check-config          validate, print the effective settings as TOML (secrets as \"***\",
                              unset ones left out) and exit 0

Settings: each is a flag, a TOML key of the same name in snake_case, and an environment
variable WSSED_NAME (WSSED_QUEUE_DEPTH=64). Flags override the environment, which overrides
the file, which overrides the defaults; `--flag VALUE` and `--flag=VALUE` both work; a repeated
flag: the last wins. Lists are comma separated as flags and variables (ci_bot,deploy_bot) and
arrays of strings in the file.

",
    );
    for entry in Config::default().entries() {
        let head = format!("  {} {}", flag_of(entry.name), entry.metavar);
        let mut text = entry.help.to_owned();
        if let Some(bounds) = &entry.bounds {
            text.push_str("; ");
            text.push_str(bounds);
        }
        // Kept on one line: a wrapped "(default" with its value alone below reads badly.
        text.push_str(&format!(" (default\u{a0}{})", entry.default));
        wrap_into(&mut out, &head, &text);
    }
    out.push_str(
        "\nExit status: 0 on success; 2 on a bad flag, variable, setting or settings file.\n",
    );
    out
}

/// Appends `head` padded to `HELP_COLUMN`, then `text` wrapped at `HELP_WIDTH`.
fn wrap_into(out: &mut String, head: &str, text: &str) {
    let mut line = format!("{head:<width$}", width = HELP_COLUMN - 2);
    if line.len() >= HELP_COLUMN - 1 {
        out.push_str(line.trim_end());
        out.push('\n');
        line = " ".repeat(HELP_COLUMN - 2);
    }
    let mut empty = true;
    for word in text.split(' ') {
        if !empty && line.chars().count() + 1 + word.chars().count() > HELP_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(HELP_COLUMN - 2);
            empty = true;
        }
        line.push_str(if empty { "  " } else { " " });
        line.push_str(&word.replace('\u{a0}', " "));
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}

/// README's settings table, generated from the table above (a test keeps the two equal).
#[cfg(test)]
pub(super) fn markdown_table() -> String {
    let mut out = String::from(
        "| key | flag / environment | default | meaning |\n| --- | --- | --- | --- |\n",
    );
    for entry in Config::default().entries() {
        let default = match &entry.toml {
            Some(t) => format!("`{t}`"),
            None => "unset".to_owned(),
        };
        let mut meaning = entry.help.to_owned();
        if let Some(bounds) = &entry.bounds {
            meaning.push_str(&format!(" ({bounds})"));
        }
        out.push_str(&format!(
            "| `{}` | `{}` / `{}` | {} | {} |\n",
            entry.name,
            flag_of(entry.name),
            env_of(entry.name),
            default,
            meaning.replace('|', "\\|"),
        ));
    }
    out
}

impl Config {
    /// The rules between settings, checked after each one alone passed.
    fn check_together(&self) -> Result<(), ConfigError> {
        let refuse = |key: &'static str, kind: ErrorKind| ConfigError {
            key: Some(key),
            origin: Origin::Settings,
            kind,
        };
        let tls_set = self.tls_listen.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_key_file.is_some();
        if tls_set && !cfg!(feature = "tls") {
            let key = if self.tls_listen.is_some() {
                "tls_listen"
            } else if self.tls_cert_file.is_some() {
                "tls_cert_file"
            } else {
                "tls_key_file"
            };
            return Err(refuse(key, ErrorKind::NotInThisBuild("tls")));
        }
        if !self.cluster_urls.is_empty() && !cfg!(feature = "cluster") {
            return Err(refuse("cluster_urls", ErrorKind::NotInThisBuild("cluster")));
        }
        if self.listen.is_none() && self.tls_listen.is_none() {
            return Err(refuse("listen", ErrorKind::NothingToListenOn));
        }
        // A TLS listener may also come from socket activation, so the files are what
        // TLS needs; tls_listen needs them.
        if self.tls_cert_file.is_none()
            && (self.tls_listen.is_some() || self.tls_key_file.is_some())
        {
            let with = if self.tls_listen.is_some() {
                "tls_listen"
            } else {
                "tls_key_file"
            };
            return Err(refuse("tls_cert_file", ErrorKind::RequiredWith(with)));
        }
        if self.tls_key_file.is_none() && self.tls_cert_file.is_some() {
            return Err(refuse(
                "tls_key_file",
                ErrorKind::RequiredWith("tls_cert_file"),
            ));
        }
        // Port 0 (any free port) twice is two ports.
        if self.tls_listen.is_some_and(|a| a.port() != 0) && self.tls_listen == self.listen {
            return Err(refuse("tls_listen", ErrorKind::SameAddressAs("listen")));
        }
        Ok(())
    }

    /// True when TLS is configured (its certificate and key are set).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }

    /// Most TCP connections served at once (devices, streams and the extra room); a
    /// connection over it is answered 503 at once.
    pub fn max_open_connections(&self) -> usize {
        self.max_connections + self.max_pending_sends + EXTRA_HTTP_CONNECTIONS
    }

    /// The effective settings as TOML, secrets shown as "***", unset secrets left out.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for entry in self.entries() {
            if let Some(value) = entry.toml {
                out.push_str(entry.name);
                out.push_str(" = ");
                out.push_str(&value);
                out.push('\n');
            }
        }
        out
    }

    /// Applies one setting from a source, naming the origin in the error.
    pub(super) fn apply(
        &mut self,
        name: &'static str,
        raw: Raw<'_>,
        origin: Origin,
    ) -> Result<(), ConfigError> {
        match self.set(name, raw) {
            Some(Ok(())) => Ok(()),
            Some(Err(kind)) => Err(ConfigError {
                key: Some(name),
                origin,
                kind,
            }),
            // Callers look names up in NAMES first.
            None => Err(ConfigError::command_line(ErrorKind::UnexpectedArgument(
                name.to_owned(),
            ))),
        }
    }
}

/// The table's name for `name`, when it is a setting.
pub(super) fn setting_name(name: &str) -> Option<&'static str> {
    NAMES.iter().copied().find(|n| *n == name)
}

/// The setting meant by a mistyped `name`, if one is close.
pub(super) fn suggest(name: &str) -> Option<&'static str> {
    closest(name, NAMES.iter().copied())
}

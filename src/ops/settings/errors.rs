//! A refused command line, settings file, environment variable or setting: one line naming
//! where it came from, the key and why.

use std::fmt;

use crate::wire::cluster::MAX_NODE_NAME_BYTES;
use crate::wire::limits::MAX_USER_ID_BYTES;

/// Longest value quoted back in an error line, in characters (keeps the line one screen wide).
const MAX_SHOWN_CHARS: usize = 64;

/// A bad command line, settings file, environment variable or setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(super) key: Option<&'static str>,
    pub(super) origin: Origin,
    pub(super) kind: ErrorKind,
}

/// Where the bad text came from; shown so the operator knows what to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// The command line, outside any setting.
    CommandLine,
    /// A setting's flag.
    Flag,
    /// A setting's environment variable.
    Env(String),
    /// The settings file, with the 1-based line when known.
    File { path: String, line: Option<usize> },
    /// The merged settings (validation).
    Settings,
}

/// Why a command line, settings file or setting was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A flag `--help` does not list; with the closest one, when one is close.
    UnknownFlag {
        /// The flag as given.
        flag: String,
        /// The flag meant, probably.
        suggestion: Option<String>,
    },
    /// A word that is neither a flag nor a flag's value.
    UnexpectedArgument(String),
    /// A flag that needs a value came last.
    MissingValue(String),
    /// A flag that takes no value was given one (`--check-config=yes`).
    UnexpectedValue(String),
    /// An argument or environment value that is not UTF-8.
    NotUtf8Argument(String),
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
    /// A key in the settings file that is not a setting; with the closest one.
    UnknownKey {
        /// The key as written.
        key: String,
        /// The setting meant, probably.
        suggestion: Option<&'static str>,
    },
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
        choices: String,
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
    /// A `cluster_urls` entry that is not a NATS server address.
    BadClusterUrl {
        /// The entry.
        got: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A directory path the daemon cannot use as given.
    BadPath {
        /// The path.
        got: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A file path set to the empty string.
    EmptyPath,
    /// `listen` is off and no other listener is configured.
    NothingToListenOn,
    /// A setting that must be set because another one is.
    RequiredWith(&'static str),
    /// Two listeners on one address.
    SameAddressAs(&'static str),
    /// A setting this build cannot honour: it lacks the cargo feature named.
    NotInThisBuild(&'static str),
    /// A `node_name` outside 1–64 of `[A-Za-z0-9_.-]`.
    BadNodeName(String),
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

    pub(super) fn command_line(kind: ErrorKind) -> Self {
        ConfigError {
            key: None,
            origin: Origin::CommandLine,
            kind,
        }
    }

    pub(super) fn file(
        path: &str,
        line: Option<usize>,
        key: Option<&'static str>,
        kind: ErrorKind,
    ) -> Self {
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
            Origin::CommandLine | Origin::Flag | Origin::Env(_) | Origin::Settings => {}
        }
        if let Some(key) = self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.kind)?;
        match (&self.origin, self.key) {
            (Origin::Flag, Some(key)) => write!(f, " (from --{})", key.replace('_', "-")),
            (Origin::Env(var), _) => write!(f, " (from {var})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::UnknownFlag {
                flag,
                suggestion: Some(s),
            } => write!(f, "unknown flag `{flag}` (did you mean `{s}`? see --help)"),
            ErrorKind::UnknownFlag { flag, .. } => write!(f, "unknown flag `{flag}` (see --help)"),
            ErrorKind::UnexpectedArgument(arg) => {
                write!(f, "unexpected argument `{arg}` (see --help)")
            }
            ErrorKind::MissingValue(flag) => write!(f, "`{flag}` needs a value"),
            ErrorKind::UnexpectedValue(flag) => write!(f, "`{flag}` takes no value"),
            ErrorKind::NotUtf8Argument(what) => write!(f, "{what} is not UTF-8"),
            ErrorKind::Unreadable(why) => write!(f, "cannot read the settings file: {why}"),
            ErrorKind::FileTooLarge { max_bytes } => {
                write!(f, "the settings file is larger than {max_bytes} bytes")
            }
            ErrorKind::NotUtf8 => write!(f, "the settings file is not UTF-8"),
            ErrorKind::Syntax(why) => write!(f, "invalid TOML: {why}"),
            ErrorKind::UnknownKey {
                key,
                suggestion: Some(s),
            } => write!(f, "unknown key `{key}` (did you mean `{s}`?)"),
            ErrorKind::UnknownKey { key, .. } => write!(f, "unknown key `{key}`"),
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
            ErrorKind::BadClusterUrl { got, why } => write!(f, "`{got}` {why}"),
            ErrorKind::BadNodeName(got) => write!(
                f,
                "`{got}` is not 1-{MAX_NODE_NAME_BYTES} of [A-Za-z0-9_.-]"
            ),
            ErrorKind::BadPath { got, why } => write!(f, "`{got}` {why}"),
            ErrorKind::EmptyPath => write!(f, "must not be empty when set"),
            ErrorKind::NothingToListenOn => {
                write!(
                    f,
                    "is off and tls_listen is unset: there is nothing to listen on"
                )
            }
            ErrorKind::RequiredWith(other) => write!(f, "must be set when {other} is set"),
            ErrorKind::SameAddressAs(other) => write!(f, "is the same address as {other}"),
            ErrorKind::NotInThisBuild(feature) => write!(
                f,
                "this build lacks the `{feature}` feature: build with `cargo build --release --features {feature}`"
            ),
        }
    }
}

/// A value quoted back in an error line: escaped, and cut so the line stays short.
pub(super) fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_SHOWN_CHARS).collect::<String>();
    out = out.escape_debug().to_string();
    if text.chars().nth(MAX_SHOWN_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// The candidate closest to `word` in edit distance, when it is close enough to be a typo:
/// at most a third of the word's length, and at least one edit allowed.
pub(super) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let cost = usize::from(ca != *cb);
            let next = (diagonal + cost).min(above + 1).min(left + 1);
            diagonal = above;
            if let Some(slot) = row.get_mut(j + 1) {
                *slot = next;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("queue_depth", "queue_depth"), 0);
        assert_eq!(edit_distance("queu_depth", "queue_depth"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn only_close_words_are_suggested() {
        let names = ["queue_depth", "max_batch", "listen"];
        assert_eq!(closest("queu_depth", names), Some("queue_depth"));
        assert_eq!(closest("max_bach", names), Some("max_batch"));
        assert_eq!(closest("colour", names), None);
        assert_eq!(closest("lsten", names), Some("listen"));
    }
}

//! The kinds of value a setting can hold, each with how it is read (from a flag, the
//! environment or the file), checked, written back as TOML and described in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::bounds::{
    OnDuplicate, MAX_CLUSTER_URL_BYTES, MAX_ORIGIN_BYTES, MAX_PATH_BYTES, MAX_SECRET_BYTES,
    MAX_TIMEOUT_SECS,
};
use super::errors::{shown, ErrorKind};
use crate::wire::cluster::is_valid_node_name;
use crate::wire::mention::is_valid_account_name;

/// A setting's value as given: text (a flag or an environment variable) or a TOML value.
#[derive(Clone, Copy)]
pub(super) enum Raw<'a> {
    /// Text from the command line or the environment.
    Text(&'a str),
    /// A value from the settings file.
    File(&'a toml::Value),
}

/// How one kind of setting is read, checked, shown and described.
pub(super) trait Kind<T> {
    /// The value `raw` holds; type and range errors are found here.
    fn read(&self, raw: Raw<'_>) -> Result<T, ErrorKind>;
    /// Checks a value however it was made (read, or built in code).
    fn check(&self, value: &T) -> Result<(), ErrorKind>;
    /// The value as TOML for `--check-config`; `None` leaves the key out.
    fn toml(&self, value: &T) -> Option<String>;
    /// What stands after the flag in `--help`.
    fn metavar(&self) -> &'static str;
    /// The allowed values as a phrase, when there is more to say than the help text.
    fn bounds(&self) -> Option<String>;
    /// The default as `--help` says it.
    fn shown_default(&self, value: &T) -> String {
        self.toml(value)
            .map_or_else(|| "unset".to_owned(), |t| t.trim_matches('"').to_owned())
    }
}

fn toml_type(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn text(raw: Raw<'_>) -> Result<&str, ErrorKind> {
    match raw {
        Raw::Text(text) => Ok(text),
        Raw::File(toml::Value::String(text)) => Ok(text),
        Raw::File(other) => Err(ErrorKind::WrongType {
            expected: "a string",
            found: toml_type(other),
        }),
    }
}

/// A whole number from 1 to `max`.
fn whole_number(raw: Raw<'_>, max: u64) -> Result<u64, ErrorKind> {
    whole_number_from(raw, 1, max)
}

/// A whole number from `min` to `max`.
fn whole_number_from(raw: Raw<'_>, min: u64, max: u64) -> Result<u64, ErrorKind> {
    let out_of_range = |got: String| ErrorKind::OutOfRange { got, min, max };
    let n: i128 = match raw {
        Raw::Text(text) => match text.parse::<i128>() {
            Ok(n) => n,
            Err(e) => {
                return Err(match e.kind() {
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                        out_of_range(shown(text))
                    }
                    _ => ErrorKind::NotWholeNumber(shown(text)),
                });
            }
        },
        Raw::File(toml::Value::Integer(n)) => i128::from(*n),
        Raw::File(toml::Value::Float(x)) => return Err(ErrorKind::NotWholeNumber(x.to_string())),
        Raw::File(other) => {
            return Err(ErrorKind::WrongType {
                expected: "a whole number",
                found: toml_type(other),
            })
        }
    };
    match u64::try_from(n) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(out_of_range(n.to_string())),
    }
}

fn in_range(n: u64, max: u64) -> Result<(), ErrorKind> {
    if (1..=max).contains(&n) {
        Ok(())
    } else {
        Err(ErrorKind::OutOfRange {
            got: n.to_string(),
            min: 1,
            max,
        })
    }
}

/// A count or size from 1 to `max`, in `unit`.
pub(super) struct Count {
    /// The largest allowed.
    pub(super) max: usize,
    /// What is counted, for `--help` ("frames", "bytes").
    pub(super) unit: &'static str,
}

impl Kind<usize> for Count {
    fn read(&self, raw: Raw<'_>) -> Result<usize, ErrorKind> {
        let n = whole_number(raw, self.max as u64)?;
        // At most `max`, which is a usize.
        Ok(usize::try_from(n).unwrap_or(self.max))
    }
    fn check(&self, value: &usize) -> Result<(), ErrorKind> {
        in_range(*value as u64, self.max as u64)
    }
    fn toml(&self, value: &usize) -> Option<String> {
        Some(value.to_string())
    }
    fn metavar(&self) -> &'static str {
        "N"
    }
    fn bounds(&self) -> Option<String> {
        Some(format!("1-{} {}", self.max, self.unit))
    }
}

/// A count or size where 0 turns the feature off; else read and checked as the `Count`.
pub(super) struct OffOr(pub(super) Count);

impl Kind<usize> for OffOr {
    fn read(&self, raw: Raw<'_>) -> Result<usize, ErrorKind> {
        let n = whole_number_from(raw, 0, self.0.max as u64)?;
        // At most `max`, which is a usize.
        Ok(usize::try_from(n).unwrap_or(self.0.max))
    }
    fn check(&self, value: &usize) -> Result<(), ErrorKind> {
        match value {
            0 => Ok(()),
            n => self.0.check(n),
        }
    }
    fn toml(&self, value: &usize) -> Option<String> {
        Some(value.to_string())
    }
    fn metavar(&self) -> &'static str {
        "N"
    }
    fn bounds(&self) -> Option<String> {
        Some(format!("0 = off, else 1-{} {}", self.0.max, self.0.unit))
    }
}

/// The absolute path of a directory (it need not exist yet).
pub(super) struct Dir;

impl Kind<PathBuf> for Dir {
    fn read(&self, raw: Raw<'_>) -> Result<PathBuf, ErrorKind> {
        Ok(PathBuf::from(text(raw)?))
    }
    fn check(&self, value: &PathBuf) -> Result<(), ErrorKind> {
        let text = value.to_string_lossy();
        let bad = |why| ErrorKind::BadPath {
            got: shown(&text),
            why,
        };
        if !value.is_absolute() {
            // The working directory of a service is not something to rely on.
            Err(bad("is not an absolute path"))
        } else if text.len() > MAX_PATH_BYTES {
            Err(bad("is too long for a path"))
        } else if text.contains('\0') {
            Err(bad("holds a NUL byte"))
        } else {
            Ok(())
        }
    }
    fn toml(&self, value: &PathBuf) -> Option<String> {
        Some(toml_string(&value.to_string_lossy()))
    }
    fn metavar(&self) -> &'static str {
        "DIR"
    }
    fn bounds(&self) -> Option<String> {
        Some("an absolute path".to_owned())
    }
}

/// A value that may be unset (left out of the file, `--check-config` and the defaults);
/// when set, read and checked as `K` does.
pub(super) struct Optional<K>(pub(super) K);

impl<T, K: Kind<T>> Kind<Option<T>> for Optional<K> {
    fn read(&self, raw: Raw<'_>) -> Result<Option<T>, ErrorKind> {
        self.0.read(raw).map(Some)
    }
    fn check(&self, value: &Option<T>) -> Result<(), ErrorKind> {
        value.as_ref().map_or(Ok(()), |v| self.0.check(v))
    }
    fn toml(&self, value: &Option<T>) -> Option<String> {
        value.as_ref().and_then(|v| self.0.toml(v))
    }
    fn metavar(&self) -> &'static str {
        self.0.metavar()
    }
    fn bounds(&self) -> Option<String> {
        self.0.bounds()
    }
}

/// A duration in whole seconds, from 1 to `MAX_TIMEOUT_SECS`.
pub(super) struct Secs;

impl Kind<u64> for Secs {
    fn read(&self, raw: Raw<'_>) -> Result<u64, ErrorKind> {
        whole_number(raw, MAX_TIMEOUT_SECS)
    }
    fn check(&self, value: &u64) -> Result<(), ErrorKind> {
        in_range(*value, MAX_TIMEOUT_SECS)
    }
    fn toml(&self, value: &u64) -> Option<String> {
        Some(value.to_string())
    }
    fn metavar(&self) -> &'static str {
        "N"
    }
    fn bounds(&self) -> Option<String> {
        Some(format!("1-{MAX_TIMEOUT_SECS} seconds"))
    }
}

/// An IP address with a port.
pub(super) struct Address;

impl Kind<SocketAddr> for Address {
    fn read(&self, raw: Raw<'_>) -> Result<SocketAddr, ErrorKind> {
        let addr = text(raw)?;
        addr.parse()
            .map_err(|_| ErrorKind::NotSocketAddress(shown(addr)))
    }
    fn check(&self, _: &SocketAddr) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn toml(&self, value: &SocketAddr) -> Option<String> {
        Some(toml_string(&value.to_string()))
    }
    fn metavar(&self) -> &'static str {
        "ADDR"
    }
    fn bounds(&self) -> Option<String> {
        None
    }
}

/// The word that turns `listen` off.
pub(super) const OFF: &str = "off";

/// `listen`: an IP address with a port, or `off` (no plain listener; TLS only).
pub(super) struct Listen;

impl Kind<Option<SocketAddr>> for Listen {
    fn read(&self, raw: Raw<'_>) -> Result<Option<SocketAddr>, ErrorKind> {
        if text(raw)? == OFF {
            return Ok(None);
        }
        Address.read(raw).map(Some)
    }
    fn check(&self, _: &Option<SocketAddr>) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn toml(&self, value: &Option<SocketAddr>) -> Option<String> {
        Some(match value {
            Some(addr) => toml_string(&addr.to_string()),
            None => toml_string(OFF),
        })
    }
    fn metavar(&self) -> &'static str {
        "ADDR|off"
    }
    fn bounds(&self) -> Option<String> {
        Some(format!("or {OFF}: no plain listener, TLS only"))
    }
}

/// A file's path: any non-empty text (whether the file is there is checked at start).
pub(super) struct FilePath;

impl Kind<std::path::PathBuf> for FilePath {
    fn read(&self, raw: Raw<'_>) -> Result<std::path::PathBuf, ErrorKind> {
        let path = text(raw)?;
        if path.is_empty() {
            return Err(ErrorKind::EmptyPath);
        }
        Ok(std::path::PathBuf::from(path))
    }
    fn check(&self, value: &std::path::PathBuf) -> Result<(), ErrorKind> {
        if value.as_os_str().is_empty() {
            Err(ErrorKind::EmptyPath)
        } else {
            Ok(())
        }
    }
    fn toml(&self, value: &std::path::PathBuf) -> Option<String> {
        Some(toml_string(&value.to_string_lossy()))
    }
    fn metavar(&self) -> &'static str {
        "FILE"
    }
    fn bounds(&self) -> Option<String> {
        None
    }
}

/// What a list holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ListOf {
    /// Public account names: 1–64 of `[A-Za-z0-9_]`.
    AccountNames,
    /// `Origin` values: `scheme://host[:port]` or `null`.
    Origins,
    /// `Origin` values a CORS answer may name: `scheme://host[:port]`, never `null` (every
    /// sandboxed page and local file sends it) nor the scheme's default port (browsers leave it
    /// out, so the entry could never match).
    CorsOrigins,
    /// NATS server addresses: `nats://host[:port]`, `tls://host[:port]` or `host[:port]`.
    ClusterUrls,
}

/// A list of distinct strings, at most `max` of them: comma separated as text, an array of
/// strings in the file. An empty text clears the list.
pub(super) struct List {
    /// What the entries are.
    pub(super) of: ListOf,
    /// Most entries.
    pub(super) max: usize,
}

impl Kind<Vec<String>> for List {
    fn read(&self, raw: Raw<'_>) -> Result<Vec<String>, ErrorKind> {
        let mut out = Vec::new();
        let mut push = |item: &str| {
            if out.len() == self.max {
                return Err(ErrorKind::TooManyEntries { max: self.max });
            }
            out.push(item.to_owned());
            Ok(())
        };
        let wrong = |found: &toml::Value| ErrorKind::WrongType {
            expected: "an array of strings",
            found: toml_type(found),
        };
        match raw {
            Raw::Text(text) if text.trim().is_empty() => {}
            Raw::Text(text) => text.split(',').try_for_each(|item| push(item.trim()))?,
            Raw::File(toml::Value::Array(items)) => {
                for item in items {
                    match item {
                        toml::Value::String(s) => push(s)?,
                        other => return Err(wrong(other)),
                    }
                }
            }
            Raw::File(other) => return Err(wrong(other)),
        }
        Ok(out)
    }

    fn check(&self, items: &Vec<String>) -> Result<(), ErrorKind> {
        if items.len() > self.max {
            return Err(ErrorKind::TooManyEntries { max: self.max });
        }
        for item in items {
            match self.of {
                ListOf::AccountNames if !is_valid_account_name(item) => {
                    return Err(ErrorKind::BadAccountName(shown(item)));
                }
                ListOf::Origins => check_origin(item).map_err(|why| ErrorKind::BadOrigin {
                    got: shown(item),
                    why,
                })?,
                ListOf::CorsOrigins => {
                    check_cors_origin(item).map_err(|why| ErrorKind::BadOrigin {
                        got: shown(item),
                        why,
                    })?;
                }
                ListOf::ClusterUrls => {
                    check_cluster_url(item).map_err(|why| ErrorKind::BadClusterUrl {
                        got: shown(item),
                        why,
                    })?;
                }
                ListOf::AccountNames => {}
            }
        }
        // Lists are capped at a few hundred entries, so the quadratic scan stays cheap.
        for (i, item) in items.iter().enumerate() {
            if items.iter().take(i).any(|earlier| earlier == item) {
                return Err(ErrorKind::DuplicateEntry(shown(item)));
            }
        }
        Ok(())
    }

    fn toml(&self, items: &Vec<String>) -> Option<String> {
        let quoted: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
        Some(format!("[{}]", quoted.join(", ")))
    }

    fn metavar(&self) -> &'static str {
        "LIST"
    }

    fn bounds(&self) -> Option<String> {
        Some(match self.of {
            ListOf::AccountNames => format!("each 1-64 of [A-Za-z0-9_], at most {}", self.max),
            ListOf::Origins => format!("each scheme://host[:port] or null, at most {}", self.max),
            ListOf::CorsOrigins => format!("each scheme://host[:port], at most {}", self.max),
            ListOf::ClusterUrls => format!(
                "each nats://host[:port] or tls://host[:port], at most {}; empty: no cluster",
                self.max
            ),
        })
    }

    fn shown_default(&self, items: &Vec<String>) -> String {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(",")
        }
    }
}

fn is_visible_ascii(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
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

fn check_cluster_url(url: &str) -> Result<(), &'static str> {
    if url.len() > MAX_CLUSTER_URL_BYTES {
        return Err("is longer than 256 bytes");
    }
    if !is_visible_ascii(url) {
        return Err("must be visible ASCII without spaces");
    }
    let authority = match url.split_once("://") {
        Some(("nats" | "tls", rest)) => rest,
        Some(_) => return Err("has a scheme other than nats:// or tls://"),
        None => url,
    };
    if authority.contains('@') {
        return Err("has credentials; set cluster_token instead (they would show in logs)");
    }
    if authority.contains(['/', '?', '#']) {
        return Err("has a path; a NATS address is only host[:port]");
    }
    // `[::1]:4222`, `host:4222`, `host`: the port, when given, is a number.
    let port = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => Some((host, port)),
        _ => None,
    };
    let host = match port {
        Some((host, port)) => {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err("has a port that is not a number from 1 to 65535");
            }
            host
        }
        None => authority,
    };
    if host.is_empty() || host == "[]" {
        return Err("has no host");
    }
    Ok(())
}

fn check_cors_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "null" {
        return Err(
            "would let every sandboxed page and local file read answers; list real origins",
        );
    }
    check_origin(origin)?;
    let lower = origin.to_ascii_lowercase();
    if (lower.starts_with("http://") && lower.ends_with(":80"))
        || (lower.starts_with("https://") && lower.ends_with(":443"))
    {
        return Err("names the scheme's default port, which browsers leave out of Origin");
    }
    Ok(())
}

/// A node's name: 1–64 of `[A-Za-z0-9_.-]`; unset means the host name.
pub(super) struct NodeName;

impl Kind<Option<String>> for NodeName {
    fn read(&self, raw: Raw<'_>) -> Result<Option<String>, ErrorKind> {
        Ok(Some(text(raw)?.to_owned()))
    }
    fn check(&self, value: &Option<String>) -> Result<(), ErrorKind> {
        match value {
            Some(name) if !is_valid_node_name(name) => Err(ErrorKind::BadNodeName(shown(name))),
            _ => Ok(()),
        }
    }
    fn toml(&self, value: &Option<String>) -> Option<String> {
        value.as_deref().map(toml_string)
    }
    fn metavar(&self) -> &'static str {
        "NAME"
    }
    fn bounds(&self) -> Option<String> {
        Some("1-64 of [A-Za-z0-9_.-]".to_owned())
    }
    fn shown_default(&self, _: &Option<String>) -> String {
        "the host name".to_owned()
    }
}

/// `true` or `false`.
pub(super) struct Switch;

impl Kind<bool> for Switch {
    fn read(&self, raw: Raw<'_>) -> Result<bool, ErrorKind> {
        match raw {
            Raw::File(toml::Value::Boolean(b)) => Ok(*b),
            Raw::File(toml::Value::String(_)) | Raw::Text(_) => match text(raw)? {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(ErrorKind::NotOneOf {
                    got: shown(other),
                    choices: "true, false".to_owned(),
                }),
            },
            Raw::File(other) => Err(ErrorKind::WrongType {
                expected: "a boolean",
                found: toml_type(other),
            }),
        }
    }
    fn check(&self, _: &bool) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn toml(&self, value: &bool) -> Option<String> {
        Some(value.to_string())
    }
    fn metavar(&self) -> &'static str {
        "BOOL"
    }
    fn bounds(&self) -> Option<String> {
        Some("true or false".to_owned())
    }
}

/// One of a few words.
pub(super) struct Choice<T: 'static> {
    /// Each word and its value.
    pub(super) words: &'static [(&'static str, T)],
}

impl<T: Copy + PartialEq> Kind<T> for Choice<T> {
    fn read(&self, raw: Raw<'_>) -> Result<T, ErrorKind> {
        let word = text(raw)?;
        self.words
            .iter()
            .find(|(w, _)| *w == word)
            .map(|(_, v)| *v)
            .ok_or_else(|| ErrorKind::NotOneOf {
                got: shown(word),
                choices: self.choices(),
            })
    }
    fn check(&self, value: &T) -> Result<(), ErrorKind> {
        // A value the type can hold but that is no documented choice (log level `off`).
        match self.words.iter().any(|(_, v)| v == value) {
            true => Ok(()),
            false => Err(ErrorKind::NotOneOf {
                got: "a value without a name".to_owned(),
                choices: self.choices(),
            }),
        }
    }
    fn toml(&self, value: &T) -> Option<String> {
        self.words
            .iter()
            .find(|(_, v)| v == value)
            .map(|(w, _)| toml_string(w))
    }
    fn metavar(&self) -> &'static str {
        "WORD"
    }
    fn bounds(&self) -> Option<String> {
        Some(format!("one of {}", self.choices()))
    }
}

impl<T> Choice<T> {
    fn choices(&self) -> String {
        let words: Vec<&str> = self.words.iter().map(|(w, _)| *w).collect();
        words.join(", ")
    }
}

/// The words of `on_duplicate`.
pub(super) const POLICIES: Choice<OnDuplicate> = Choice {
    words: &[
        ("reject", OnDuplicate::Reject),
        ("replace", OnDuplicate::Replace),
    ],
};

/// The words of `log_level`.
pub(super) const LEVELS: Choice<log::LevelFilter> = Choice {
    words: &[
        ("error", log::LevelFilter::Error),
        ("warn", log::LevelFilter::Warn),
        ("info", log::LevelFilter::Info),
        ("debug", log::LevelFilter::Debug),
        ("trace", log::LevelFilter::Trace),
    ],
};

/// A secret that may be unset; checked without ever being shown, written back masked.
pub(super) struct Secret {
    /// It travels in a header, so it must be visible ASCII.
    pub(super) header_safe: bool,
}

impl Kind<Option<String>> for Secret {
    fn read(&self, raw: Raw<'_>) -> Result<Option<String>, ErrorKind> {
        Ok(Some(text(raw)?.to_owned()))
    }
    fn check(&self, value: &Option<String>) -> Result<(), ErrorKind> {
        let Some(secret) = value else {
            return Ok(());
        };
        if secret.is_empty() {
            Err(ErrorKind::EmptySecret)
        } else if secret.len() > MAX_SECRET_BYTES {
            Err(ErrorKind::SecretTooLong {
                max_bytes: MAX_SECRET_BYTES,
            })
        } else if self.header_safe && !is_visible_ascii(secret) {
            Err(ErrorKind::BadTokenChar)
        } else {
            Ok(())
        }
    }
    fn toml(&self, value: &Option<String>) -> Option<String> {
        value.as_ref().map(|_| toml_string("***"))
    }
    fn metavar(&self) -> &'static str {
        "SECRET"
    }
    fn bounds(&self) -> Option<String> {
        Some(if self.header_safe {
            format!("visible ASCII, no spaces, at most {MAX_SECRET_BYTES} bytes")
        } else {
            format!("at most {MAX_SECRET_BYTES} bytes")
        })
    }
}

/// A TOML basic string holding `text`.
pub(super) fn toml_string(text: &str) -> String {
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

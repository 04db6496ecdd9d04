//! A small `log::Log` that writes one line per record to stderr.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog priority (`<6>`), which
//! journald turns into the entry's level, and carries no timestamp (journald adds its own).
//! Elsewhere each line starts with a UTC RFC 3339 timestamp.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::calendar::civil_from_days;

/// Longest line written, in bytes; longer messages are cut and end with `…`.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// What starts each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// The syslog priority, for journald.
    Journal,
    /// A UTC timestamp of this time.
    Timestamp(SystemTime),
}

/// Whether lines go to journald, judged by the value of `JOURNAL_STREAM`.
pub fn journal_mode(journal_stream: Option<&std::ffi::OsStr>) -> bool {
    journal_stream.is_some_and(|v| !v.is_empty())
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One record as one line, newline included: `[<N>|TIMESTAMP ]LEVEL target: message`.
/// Control characters in the target and message are escaped so that a peer-supplied string
/// logged verbatim cannot start a forged line.
pub fn format_line(
    prefix: Prefix,
    level: log::Level,
    target: &str,
    message: fmt::Arguments<'_>,
) -> String {
    let mut line = String::with_capacity(128);
    match prefix {
        Prefix::Journal => {
            let _ = write!(line, "<{}>", syslog_priority(level));
        }
        Prefix::Timestamp(now) => {
            line.push_str(&rfc3339_utc(now));
            line.push(' ');
        }
    }
    line.push_str(level.as_str());
    line.push(' ');
    let mut out = Escaping {
        line: &mut line,
        cut: false,
    };
    let _ = out.write_str(target);
    let _ = out.write_str(": ");
    let _ = out.write_fmt(message);
    if out.cut {
        line.push('…');
    }
    line.push('\n');
    line
}

/// Appends text with control characters escaped, stopping at `MAX_LOG_LINE_BYTES`.
struct Escaping<'a> {
    line: &'a mut String,
    cut: bool,
}

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for c in text.chars() {
            if self.cut {
                break;
            }
            let mut utf8 = [0u8; 4];
            let escaped;
            let piece: &str = match c {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\t",
                c if c.is_control() => {
                    escaped = format!("\\u{{{:x}}}", u32::from(c));
                    &escaped
                }
                c => c.encode_utf8(&mut utf8),
            };
            // Leaves room for the `…` and the newline.
            if self.line.len() + piece.len() > MAX_LOG_LINE_BYTES - 4 {
                self.cut = true;
            } else {
                self.line.push_str(piece);
            }
        }
        Ok(())
    }
}

/// `SystemTime` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (times before 1970 show as 1970).
pub fn rfc3339_utc(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The installed logger; the level filter itself lives in `log::max_level`.
struct StderrLogger {
    journal: bool,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = if self.journal {
            Prefix::Journal
        } else {
            Prefix::Timestamp(SystemTime::now())
        };
        let line = format_line(prefix, record.level(), record.target(), *record.args());
        // One write on the locked handle keeps lines from different threads whole. A failed
        // write to stderr has nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the stderr logger at `level`. A second call changes nothing and returns Err.
pub fn init(level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
    let journal = journal_mode(std::env::var_os("JOURNAL_STREAM").as_deref());
    log::set_boxed_logger(Box::new(StderrLogger { journal }))?;
    log::set_max_level(level);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_timestamp() {
        let cases = [
            (log::Level::Error, "<3>ERROR"),
            (log::Level::Warn, "<4>WARN"),
            (log::Level::Info, "<6>INFO"),
            (log::Level::Debug, "<7>DEBUG"),
            (log::Level::Trace, "<7>TRACE"),
        ];
        for (level, start) in cases {
            let line = format_line(
                Prefix::Journal,
                level,
                "wssed::conn",
                format_args!("closed {} after {}s", "dev1", 5),
            );
            assert_eq!(line, format!("{start} wssed::conn: closed dev1 after 5s\n"));
        }
    }

    #[test]
    fn terminal_lines_start_with_a_utc_timestamp() {
        let line = format_line(
            Prefix::Timestamp(at(1_709_210_096, 789)),
            log::Level::Warn,
            "wssed",
            format_args!("queue full"),
        );
        assert_eq!(line, "2024-02-29T12:34:56.789Z WARN wssed: queue full\n");
    }

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(at(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_utc(at(4_107_542_399, 999)),
            "2100-02-28T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_utc(at(253_402_300_799, 1)),
            "9999-12-31T23:59:59.001Z"
        );
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(10)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let line = format_line(
            Prefix::Journal,
            log::Level::Info,
            "t\nx",
            format_args!("{}", "a\nb\r\u{1b}[31m\u{7f}\tc\n<3>ERROR fake"),
        );
        assert_eq!(
            line,
            "<6>INFO t\\nx: a\\nb\\r\\u{1b}[31m\\u{7f}\tc\\n<3>ERROR fake\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn long_messages_are_cut_to_the_line_limit() {
        let long = "é".repeat(MAX_LOG_LINE_BYTES);
        let line = format_line(
            Prefix::Timestamp(UNIX_EPOCH),
            log::Level::Debug,
            "t",
            format_args!("{long}"),
        );
        assert!(line.len() <= MAX_LOG_LINE_BYTES, "{}", line.len());
        assert!(line.ends_with("é…\n"));
        let short = format_line(Prefix::Journal, log::Level::Info, "t", format_args!("ok"));
        assert!(!short.contains('…'));
    }

    #[test]
    fn journal_mode_follows_journal_stream() {
        assert!(!journal_mode(None));
        assert!(!journal_mode(Some(std::ffi::OsStr::new(""))));
        assert!(journal_mode(Some(std::ffi::OsStr::new("8:12345"))));
    }

    #[test]
    fn init_twice_is_an_error_not_a_panic() {
        // The first call may already have lost to another test; the second always loses.
        let _ = init(log::LevelFilter::Warn);
        let before = log::max_level();
        assert!(init(log::LevelFilter::Trace).is_err());
        assert_eq!(log::max_level(), before);
    }
}

//! Where settings come from: the settings file, the environment and the command line, read
//! in that order of precedence (each later one overrides), then checked as a whole.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;

use toml::{Spanned, Value};

use super::bounds::MAX_CONFIG_FILE_BYTES;
use super::errors::{shown, ConfigError, ErrorKind, Origin};
use super::kinds::Raw;
use super::table::{env_of, flag_of, setting_name, suggest, Command, Config, NAMES};

/// Longest TOML parser message kept in an error line, in characters.
const MAX_TOML_MESSAGE_CHARS: usize = 200;

/// Parses the command line (without argv[0]) with the process's environment.
pub fn parse_args<I>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    parse_args_with_env(args, |name| std::env::var_os(name))
}

/// `parse_args` with the environment given by `env` (tests pass their own).
pub(crate) fn parse_args_with_env<I>(
    args: I,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Command, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // lexopt ends option parsing at `--`; wssed takes no positional words, so `--` can only
    // be a mistake and is refused like any unknown flag.
    if args.iter().any(|a| a == "--") {
        return Err(unknown_flag("--"));
    }
    let mut parser = lexopt::Parser::from_args(args);
    let mut config_path: Option<String> = None;
    let mut check_only = false;
    let mut flags: Vec<(&'static str, String)> = Vec::new();
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return Err(ConfigError::command_line(lexopt_error(e))),
        };
        match arg {
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => {
                no_value(&mut parser, "--help")?;
                return Ok(Command::Help);
            }
            lexopt::Arg::Short('V') | lexopt::Arg::Long("version") => {
                no_value(&mut parser, "--version")?;
                return Ok(Command::Version);
            }
            lexopt::Arg::Long("check-config") => {
                no_value(&mut parser, "--check-config")?;
                check_only = true;
            }
            lexopt::Arg::Long("config") => config_path = Some(value(&mut parser, "--config")?),
            lexopt::Arg::Long(flag) => {
                let Some(name) =
                    setting_name(&flag.replace('-', "_")).filter(|_| !flag.contains('_'))
                else {
                    return Err(unknown_flag(&format!("--{flag}")));
                };
                let flag = flag_of(name);
                flags.push((name, value(&mut parser, &flag)?));
            }
            lexopt::Arg::Short(c) => return Err(unknown_flag(&format!("-{c}"))),
            lexopt::Arg::Value(word) => {
                return Err(ConfigError::command_line(ErrorKind::UnexpectedArgument(
                    shown(&word.to_string_lossy()),
                )))
            }
        }
    }
    let mut config = Config::default();
    if let Some(path) = &config_path {
        apply_file(&mut config, path)?;
    }
    apply_env(&mut config, &env)?;
    for (name, value) in &flags {
        config.apply(name, Raw::Text(value), Origin::Flag)?;
    }
    config.validate()?;
    Ok(if check_only {
        Command::CheckConfig(config)
    } else {
        Command::Run(config)
    })
}

fn unknown_flag(flag: &str) -> ConfigError {
    let suggestion = flag
        .strip_prefix("--")
        .and_then(|rest| suggest(&rest.replace('-', "_")))
        .map(flag_of);
    ConfigError::command_line(ErrorKind::UnknownFlag {
        flag: shown(flag),
        suggestion,
    })
}

/// Refuses a value attached to a flag that takes none (`--check-config=yes`).
fn no_value(parser: &mut lexopt::Parser, flag: &str) -> Result<(), ConfigError> {
    match parser.optional_value() {
        Some(_) => Err(ConfigError::command_line(ErrorKind::UnexpectedValue(
            flag.to_owned(),
        ))),
        None => Ok(()),
    }
}

/// The value of `flag`: attached with `=` or the next word, whatever it looks like.
fn value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, ConfigError> {
    let value = parser
        .value()
        .map_err(|_| ConfigError::command_line(ErrorKind::MissingValue(flag.to_owned())))?;
    value.into_string().map_err(|_| {
        ConfigError::command_line(ErrorKind::NotUtf8Argument(format!("the value of {flag}")))
    })
}

fn lexopt_error(e: lexopt::Error) -> ErrorKind {
    match e {
        lexopt::Error::MissingValue { option } => {
            ErrorKind::MissingValue(option.unwrap_or_default())
        }
        lexopt::Error::UnexpectedValue { option, .. } => ErrorKind::UnexpectedValue(option),
        lexopt::Error::NonUnicodeValue(_) => ErrorKind::NotUtf8Argument("an argument".to_owned()),
        other => ErrorKind::UnexpectedArgument(shown(&other.to_string())),
    }
}

/// Applies every setting whose variable (`WSSED_QUEUE_DEPTH`) is set. Only setting names
/// are read: other `WSSED_*` variables (build capacities, test knobs) are not ours to judge.
fn apply_env(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<(), ConfigError> {
    for name in NAMES {
        let var = env_of(name);
        let Some(value) = env(&var) else {
            continue;
        };
        let value = value.into_string().map_err(|_| ConfigError {
            key: Some(name),
            origin: Origin::Env(var.clone()),
            kind: ErrorKind::NotUtf8Argument("the value".to_owned()),
        })?;
        config.apply(name, Raw::Text(&value), Origin::Env(var))?;
    }
    Ok(())
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
    apply_toml(config, &doc, path)
}

/// Applies the settings of a TOML document in document order; `path` only labels errors.
pub(super) fn apply_toml(config: &mut Config, doc: &str, path: &str) -> Result<(), ConfigError> {
    let table: BTreeMap<Spanned<String>, Spanned<Value>> =
        toml::from_str(doc).map_err(|e| toml_error(&e, doc, path))?;
    let mut entries: Vec<(&Spanned<String>, &Spanned<Value>)> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in entries {
        let Some(name) = setting_name(key.get_ref()) else {
            return Err(ConfigError::file(
                path,
                line_of(doc, key.span().start),
                None,
                ErrorKind::UnknownKey {
                    key: shown(key.get_ref()),
                    suggestion: suggest(key.get_ref()),
                },
            ));
        };
        let origin = Origin::File {
            path: path.to_owned(),
            line: line_of(doc, value.span().start),
        };
        config.apply(name, Raw::File(value.get_ref()), origin)?;
    }
    Ok(())
}

/// The 1-based line holding byte `offset` of `doc`.
fn line_of(doc: &str, offset: usize) -> Option<usize> {
    let before = doc.as_bytes().get(..offset)?;
    Some(before.iter().filter(|&&b| b == b'\n').count() + 1)
}

/// toml's error, condensed to one line (its `Display` draws a multi-line snippet).
fn toml_error(error: &toml::de::Error, doc: &str, path: &str) -> ConfigError {
    let line = error.span().and_then(|span| line_of(doc, span.start));
    let words: Vec<&str> = error.message().split_whitespace().collect();
    let mut one_line: String = words.join(" ");
    if one_line.chars().count() > MAX_TOML_MESSAGE_CHARS {
        one_line = one_line.chars().take(MAX_TOML_MESSAGE_CHARS).collect();
        one_line.push('…');
    }
    ConfigError::file(path, line, None, ErrorKind::Syntax(one_line))
}

//! The settings table's tests: every source, every error, the help text and the README table.

use super::errors::shown;
use super::table::*;
use super::*;
use crate::ops::limits::{DEVICE_TABLE_CAPACITY, MAX_PUBLIC_ACCOUNTS, PENDING_TABLE_CAPACITY};

use std::sync::atomic::{AtomicUsize, Ordering};

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// Parses `words` with an empty environment, so the tests do not depend on the process's.
fn parse(words: Vec<String>) -> Result<Command, ConfigError> {
    parse_args_with_env(words, |_| None)
}

fn run(words: &[&str]) -> Config {
    match parse(args(words)) {
        Ok(Command::Run(config)) => config,
        other => panic!("{words:?}: expected Run, got {other:?}"),
    }
}

fn fail(words: &[&str]) -> ConfigError {
    match parse(args(words)) {
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
        let path =
            std::env::temp_dir().join(format!("wssed-config-test-{}-{n}.toml", std::process::id()));
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
    sources::apply_toml(&mut config, doc, "test.toml")?;
    Ok(config)
}

#[test]
fn defaults_are_the_spec_table() {
    let c = run(&[]);
    assert_eq!(c, Config::default());
    assert_eq!(c.listen, Some("0.0.0.0:8080".parse().unwrap()));
    assert!(c.public_accounts.is_empty());
    assert_eq!(
        (
            c.max_connections,
            c.queue_depth,
            c.max_body_bytes,
            c.max_message_bytes
        ),
        (4096.min(DEVICE_TABLE_CAPACITY), 64, 65536, 65536)
    );
    // A board built with smaller tables defaults to its capacity, so it starts without a
    // settings file (cross-test runs this with each board's capacities).
    assert_eq!(
        (c.max_batch, c.max_pending_sends),
        (1000, 1024.min(PENDING_TABLE_CAPACITY))
    );
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
pong_timeout_secs = 11\nheader_timeout_secs = 12\nbody_timeout_secs = 15\n\
idle_timeout_secs = 13\nwrite_timeout_secs = 16\nshutdown_timeout_secs = 14\non_duplicate = \"replace\"\napi_token = \"tok\"\n\
ws_secret = \"sec\"\nallowed_origins = [\"https://a.example\"]\nlog_level = \"debug\"\n\
worker_threads = 3\nqueue_bytes = 17\nstream_buffer_bytes = 18\nmemory_budget_bytes = 19\nsocket_buffer_bytes = 20\n\
mailbox_messages = 20\nmailbox_bytes = 21\nmailbox_ttl_secs = 22\nstate_dir = \"/var/lib/w s\"\n\
cors_allowed_origins = [\"http://nas.lan:8123\"]\nstatus_page = true\ntls_listen = \"127.0.0.1:2\"\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\ntls_handshake_timeout_secs = 21\n\
cluster_urls = [\"nats://127.0.0.1:4222\", \"tls://nats.example:4443\"]\ncluster_token = \"ct\"\n\
node_name = \"gw-1\"\ncluster_timeout_secs = 24\n",
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
        "--body-timeout-secs=15",
        "--idle-timeout-secs=13",
        "--write-timeout-secs=16",
        "--shutdown-timeout-secs=14",
        "--on-duplicate=replace",
        "--api-token=tok",
        "--ws-secret=sec",
        "--allowed-origins=https://a.example",
        "--log-level=debug",
        "--worker-threads=3",
        "--queue-bytes=17",
        "--stream-buffer-bytes=18",
        "--memory-budget-bytes=19",
        "--socket-buffer-bytes=20",
        "--mailbox-messages=20",
        "--mailbox-bytes=21",
        "--mailbox-ttl-secs=22",
        "--state-dir=/var/lib/w s",
        "--cors-allowed-origins=http://nas.lan:8123",
        "--status-page=true",
        "--tls-listen=127.0.0.1:2",
        "--tls-cert-file=/c.pem",
        "--tls-key-file=/k.pem",
        "--tls-handshake-timeout-secs=21",
        "--cluster-urls=nats://127.0.0.1:4222,tls://nats.example:4443",
        "--cluster-token=ct",
        "--node-name=gw-1",
        "--cluster-timeout-secs=24",
    ]);
    let expected = Config {
        listen: Some("127.0.0.1:1".parse().unwrap()),
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
        body_timeout_secs: 15,
        idle_timeout_secs: 13,
        write_timeout_secs: 16,
        shutdown_timeout_secs: 14,
        on_duplicate: OnDuplicate::Replace,
        api_token: Some("tok".into()),
        ws_secret: Some("sec".into()),
        allowed_origins: vec!["https://a.example".into()],
        log_level: log::LevelFilter::Debug,
        worker_threads: 3,
        queue_bytes: 17,
        stream_buffer_bytes: 18,
        memory_budget_bytes: Some(19),
        socket_buffer_bytes: 20,
        mailbox_messages: 20,
        mailbox_bytes: 21,
        mailbox_ttl_secs: 22,
        state_dir: Some("/var/lib/w s".into()),
        cors_allowed_origins: vec!["http://nas.lan:8123".into()],
        status_page: true,
        tls_listen: Some("127.0.0.1:2".parse().unwrap()),
        tls_cert_file: Some("/c.pem".into()),
        tls_key_file: Some("/k.pem".into()),
        tls_handshake_timeout_secs: 21,
        cluster_urls: vec![
            "nats://127.0.0.1:4222".into(),
            "tls://nats.example:4443".into(),
        ],
        cluster_token: Some("ct".into()),
        node_name: Some("gw-1".into()),
        cluster_timeout_secs: 24,
    };
    assert_eq!(from_file, expected);
    assert_eq!(from_flags, expected);
}

#[test]
fn the_mailbox_is_off_by_default_zero_turns_it_off_and_state_dir_is_absolute() {
    let c = Config::default();
    assert_eq!((c.mailbox_messages, c.state_dir.as_deref()), (0, None));
    assert_eq!(run(&["--mailbox-messages", "0"]).mailbox_messages, 0);
    assert_eq!(
        run(&["--mailbox-messages", "65536"]).mailbox_messages,
        65_536
    );
    let e = fail(&["--mailbox-messages", "65537"]);
    assert_eq!(e.key(), Some("mailbox_messages"));
    assert!(e.to_string().contains("from 0 to 65536"), "{e}");
    assert_eq!(fail(&["--mailbox-bytes", "0"]).key(), Some("mailbox_bytes"));
    let e = fail(&["--state-dir", "var/lib/wssed"]);
    assert_eq!(e.key(), Some("state_dir"));
    assert!(e.to_string().contains("is not an absolute path"), "{e}");
    let c = run(&["--state-dir", "/var/lib/wssed", "--mailbox-messages", "8"]);
    assert!(
        c.to_toml().contains("\nstate_dir = \"/var/lib/wssed\"\n"),
        "{}",
        c.to_toml()
    );
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
    assert_eq!(c.listen, Some("[::1]:9000".parse().unwrap()));
    assert_eq!(c.api_token.as_deref(), Some("abc=def"));
    let c = run(&["--listen", "[::]:8080"]);
    assert_eq!(c.listen, Some("[::]:8080".parse().unwrap()));
}

#[test]
fn a_bad_flag_value_names_its_key() {
    let cases: [(&str, &str); 41] = [
        ("listen", "localhost:8080"),
        ("tls_listen", "of"),
        ("tls_cert_file", ""),
        ("tls_key_file", ""),
        ("tls_handshake_timeout_secs", "0"),
        ("public_accounts", "ok,not-ok"),
        ("max_connections", "0"),
        ("queue_depth", "-1"),
        ("queue_bytes", "0"),
        ("max_body_bytes", "1.5"),
        ("max_message_bytes", "lots"),
        ("max_batch", "0"),
        ("max_pending_sends", "0"),
        ("stream_buffer_bytes", "1073741825"),
        ("socket_buffer_bytes", "x"),
        ("memory_budget_bytes", "0"),
        ("send_timeout_secs", "0"),
        ("keepalive_secs", "86401"),
        ("ping_interval_secs", ""),
        ("pong_timeout_secs", "0"),
        ("header_timeout_secs", "0"),
        ("body_timeout_secs", "x"),
        ("idle_timeout_secs", "0"),
        ("write_timeout_secs", "86401"),
        (
            "shutdown_timeout_secs",
            "99999999999999999999999999999999999999999",
        ),
        ("mailbox_messages", "-1"),
        ("mailbox_bytes", "0"),
        ("mailbox_ttl_secs", "86401"),
        ("state_dir", "relative/dir"),
        ("on_duplicate", "keep"),
        ("api_token", ""),
        ("ws_secret", ""),
        ("allowed_origins", "example.com"),
        ("cors_allowed_origins", "null"),
        ("status_page", "yes"),
        ("log_level", "verbose"),
        ("worker_threads", "65"),
        ("cluster_urls", "http://nats:4222"),
        ("cluster_token", "with space"),
        ("node_name", "gw 1"),
        ("cluster_timeout_secs", "0"),
    ];
    let names: Vec<&str> = cases.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, NAMES, "every key has a case");
    for (key, bad) in cases {
        let flag = format!("--{}", key.replace('_', "-"));
        for words in [
            vec![flag.clone(), bad.to_owned()],
            vec![format!("{flag}={bad}")],
        ] {
            let e = parse(words.clone()).unwrap_err();
            assert_eq!(e.key(), Some(key), "{words:?}: {e}");
            let line = e.to_string();
            assert!(line.starts_with(&format!("{key}: ")), "{line}");
            assert!(!line.contains('\n'));
        }
    }
}

#[test]
fn a_bad_file_value_names_its_key_and_line() {
    for &key in NAMES {
        let doc = format!("# settings\n{key} = {{ nested = 1 }}\n");
        let e = from_toml(&doc).unwrap_err();
        assert_eq!(e.key(), Some(key));
        let line = e.to_string();
        assert!(
            line.starts_with(&format!("test.toml:2: {key}: expected ")),
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
    assert_eq!(
        e.kind(),
        &ErrorKind::UnknownKey {
            key: "queu_depth".into(),
            suggestion: Some("queue_depth")
        }
    );
    assert_eq!(
        e.to_string(),
        "test.toml:2: unknown key `queu_depth` (did you mean `queue_depth`?)"
    );
    let e = from_toml("[server]\nlisten = \"0.0.0.0:1\"\n").unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::UnknownKey {
            key: "server".into(),
            suggestion: None
        }
    );
    assert_eq!(e.to_string(), "test.toml:1: unknown key `server`");
}

#[test]
fn unknown_flags_and_stray_words_are_errors() {
    for flag in ["--queu-depth", "--queue_depth", "-x", "--", "--QUEUE-DEPTH"] {
        let e = fail(&[flag, "1"]);
        assert!(
            matches!(e.kind(), ErrorKind::UnknownFlag { flag: f, .. } if f == flag),
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
    assert_eq!(parse(args(&["--help"])), Ok(Command::Help));
    assert_eq!(parse(args(&["-h"])), Ok(Command::Help));
    assert_eq!(parse(args(&["--version"])), Ok(Command::Version));
    assert_eq!(parse(args(&["-V"])), Ok(Command::Version));
    assert_eq!(
        parse(args(&["--check-config"])),
        Ok(Command::CheckConfig(Config::default()))
    );
    let file = TempFile::new(b"max_batch = 9\n");
    match parse(args(&["--check-config", "--config", file.path()])) {
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
fn cors_origins_are_real_origins_a_browser_can_send() {
    for (bad, why) in [
        ("null", "sandboxed page"),
        ("*", "scheme://host"),
        ("http://nas.lan:80", "default port"),
        ("https://NAS.lan:443", "default port"),
        ("http://nas.lan/", "path"),
    ] {
        let e = fail(&["--cors-allowed-origins", bad]);
        assert_eq!(e.key(), Some("cors_allowed_origins"), "{bad}");
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    let c = run(&[
        "--cors-allowed-origins",
        "http://nas.lan:8123,https://ha.local,http://127.0.0.1:8081",
    ]);
    assert_eq!(c.cors_allowed_origins.len(), 3);
    // Listed once each, like the other lists.
    let e = fail(&["--cors-allowed-origins", "https://a.lan,https://a.lan"]);
    assert_eq!(e.kind(), &ErrorKind::DuplicateEntry("https://a.lan".into()));
}

#[test]
fn switches_take_true_or_false_as_text_and_booleans_in_the_file() {
    assert!(run(&["--status-page", "true"]).status_page);
    assert!(!run(&["--status-page=false"]).status_page);
    assert!(!Config::default().status_page);
    let e = fail(&["--status-page", "1"]);
    assert!(e.to_string().contains("true, false"), "{e}");
    let file = TempFile::new(b"status_page = true\n");
    assert!(run(&["--config", file.path()]).status_page);
    let file = TempFile::new(b"status_page = 1\n");
    let e = fail(&["--config", file.path()]);
    assert!(e.to_string().contains("expected a boolean"), "{e}");
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
    let mut numbers = 0;
    for entry in Config::default().entries() {
        // 0 turns the mailbox off (the_mailbox_is_off_by_default_...).
        if entry.metavar != "N" || entry.name == "mailbox_messages" {
            continue;
        }
        numbers += 1;
        let bounds = entry.bounds.clone().unwrap_or_default();
        let max: u64 = bounds
            .strip_prefix("1-")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}: bounds {bounds:?}", entry.name));
        let flag = flag_of(entry.name);
        let line = |c: &Config, n: u64| c.to_toml().contains(&format!("\n{} = {n}\n", entry.name));
        assert!(line(&run(&[&flag, &max.to_string()]), max), "{flag} {max}");
        assert!(line(&run(&[&flag, "1"]), 1), "{flag} 1");
        for bad in ["0".to_owned(), (max + 1).to_string()] {
            let e = fail(&[&flag, &bad]);
            assert_eq!(e.key(), Some(entry.name));
            assert!(
                matches!(e.kind(), ErrorKind::OutOfRange { got, .. } if *got == bad),
                "{e}"
            );
        }
    }
    assert_eq!(numbers, 24, "counts, sizes and durations");
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
    let help = help();
    for entry in Config::default().entries() {
        let flag = format!("  {} ", flag_of(entry.name));
        let start = help
            .find(&flag)
            .unwrap_or_else(|| panic!("{flag} missing from --help"));
        let rest = &help[start + flag.len()..];
        let text = &rest[..rest.find("\n  --").unwrap_or(rest.len())];
        let text: Vec<&str> = text.split_whitespace().collect();
        let text = text.join(" ");
        assert!(
            text.contains(&format!("(default {})", entry.default)),
            "{flag}: {text}"
        );
        assert!(text.contains(entry.help), "{flag}: {text}");
    }
    for flag in [
        "--help",
        "-h",
        "--version",
        "-V",
        "--config FILE",
        "--check-config",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
    let devices = DEVICE_TABLE_CAPACITY.to_string();
    let streams = PENDING_TABLE_CAPACITY.to_string();
    for bound in [
        "86400", "67108864", "65536", "1638", &devices, &streams, "256",
    ] {
        assert!(help.contains(bound), "{bound}");
    }
    for line in help.lines() {
        assert!(line.chars().count() <= HELP_WIDTH, "too wide: {line:?}");
    }
}

#[test]
fn the_environment_sits_between_the_file_and_the_flags() {
    let file = TempFile::new(b"queue_depth = 10\nmax_batch = 5\nlog_level = \"warn\"\n");
    let env = |name: &str| -> Option<std::ffi::OsString> {
        match name {
            "WSSED_QUEUE_DEPTH" => Some("20".into()),
            "WSSED_MAX_BATCH" => Some("6".into()),
            "WSSED_PUBLIC_ACCOUNTS" => Some("ci_bot, deploy_bot".into()),
            _ => None,
        }
    };
    let words = args(&["--config", file.path(), "--max-batch", "7"]);
    let Ok(Command::Run(c)) = parse_args_with_env(words, env) else {
        panic!("not a run")
    };
    assert_eq!((c.queue_depth, c.max_batch), (20, 7));
    assert_eq!(c.log_level, log::LevelFilter::Warn);
    assert_eq!(c.public_accounts, ["ci_bot", "deploy_bot"]);
    // Variables that are no setting's are not ours to judge (build capacities, test knobs).
    let env = |name: &str| -> Option<std::ffi::OsString> {
        name.starts_with("WSSED_")
            .then(|| "nonsense".into())
            .filter(|_| !NAMES.iter().any(|n| env_of(n) == name))
    };
    assert!(matches!(
        parse_args_with_env(args(&[]), env),
        Ok(Command::Run(_))
    ));
    // A bad value names its key and the variable.
    let env = |name: &str| (name == "WSSED_QUEUE_DEPTH").then(|| "0".into());
    let e = parse_args_with_env(args(&[]), env).unwrap_err();
    assert_eq!(e.key(), Some("queue_depth"));
    assert_eq!(
        e.to_string(),
        "queue_depth: must be a whole number from 1 to 65536, got 0 (from WSSED_QUEUE_DEPTH)"
    );
}

#[test]
fn unknown_flags_get_a_did_you_mean_when_one_is_close() {
    let e = fail(&["--queue-dept", "3"]);
    assert_eq!(
        e.to_string(),
        "unknown flag `--queue-dept` (did you mean `--queue-depth`? see --help)"
    );
    let e = fail(&["--queue_depth", "3"]);
    assert!(
        matches!(e.kind(), ErrorKind::UnknownFlag { suggestion: Some(s), .. } if s == "--queue-depth"),
        "{e}"
    );
    let e = fail(&["--colour"]);
    assert_eq!(e.to_string(), "unknown flag `--colour` (see --help)");
}

#[test]
fn every_setting_has_one_flag_one_key_and_one_variable() {
    for &name in NAMES {
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        assert_eq!(flag_of(name), format!("--{}", name.replace('_', "-")));
        assert_eq!(env_of(name), format!("WSSED_{}", name.to_ascii_uppercase()));
    }
    let mut sorted = NAMES.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), NAMES.len(), "a name declared twice");
}

/// README.md carries the table generated from the settings table, between two markers.
#[test]
fn the_readme_settings_table_is_the_table_in_code() {
    if !crate::ops::limits::TABLES_ARE_DEFAULT {
        // README.md describes the default build; a board's build has other table bounds.
        return;
    }
    const BEGIN: &str = "<!-- settings-table: generated from src/ops/settings/table.rs -->\n";
    const END: &str = "<!-- settings-table: end -->";
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find(BEGIN)
        .expect("the table's begin marker in README.md")
        + BEGIN.len();
    let end = start
        + readme[start..]
            .find(END)
            .expect("the table's end marker in README.md");
    let want = markdown_table();
    assert!(
        readme[start..end] == want,
        "README.md's settings table differs from the table in code; put this between the markers:\n{want}"
    );
}

#[test]
fn cluster_urls_are_nats_addresses_without_credentials() {
    for good in [
        "nats://127.0.0.1:4222",
        "tls://nats.example:4443",
        "127.0.0.1:4222",
        "nats.local",
        "nats://[::1]:4222",
        "[::1]",
    ] {
        let c = Config {
            cluster_urls: vec![good.into()],
            ..Config::default()
        };
        // Tests build the cluster feature (the self dev-dependency).
        assert_eq!(c.validate(), Ok(()), "{good}");
    }
    for (bad, why) in [
        ("http://nats:4222", "scheme"),
        ("nats://user:pass@nats:4222", "credentials"),
        ("nats://nats:4222/x", "path"),
        ("nats://nats:0", "port"),
        ("nats://nats:70000", "port"),
        ("nats://:4222", "no host"),
        ("nats ://x", "visible ASCII"),
    ] {
        let e = fail(&["--cluster-urls", bad]);
        assert_eq!(e.key(), Some("cluster_urls"));
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    // Empty is the default: no cluster.
    assert!(run(&["--cluster-urls="]).cluster_urls.is_empty());
}

#[test]
fn node_names_are_checked_and_the_token_is_masked() {
    let e = fail(&["--node-name", "a*b"]);
    assert_eq!(
        e.to_string(),
        "node_name: `a*b` is not 1-64 of [A-Za-z0-9_.-]"
    );
    let c = run(&["--cluster-token", "nats-s3cret", "--node-name", "gw-2"]);
    let out = c.to_toml();
    assert!(out.contains("cluster_token = \"***\"\n"), "{out}");
    assert!(out.contains("node_name = \"gw-2\"\n"), "{out}");
    assert!(!Config::default().to_toml().contains("node_name"));
}

#[test]
fn listen_off_needs_a_tls_listener() {
    let e = fail(&["--listen=off"]);
    assert_eq!(e.key(), Some("listen"));
    assert_eq!(e.kind(), &ErrorKind::NothingToListenOn);
    assert!(e.to_string().starts_with("listen: is off"), "{e}");
    let c = run(&[
        "--listen=off",
        "--tls-listen=127.0.0.1:8443",
        "--tls-cert-file=c.pem",
        "--tls-key-file=k.pem",
    ]);
    assert_eq!(c.listen, None);
    assert!(c.tls_enabled());
    assert!(
        c.to_toml().contains("listen = \"off\"\n"),
        "{}",
        c.to_toml()
    );
}

#[test]
fn tls_settings_come_together() {
    let e = fail(&["--tls-listen=127.0.0.1:8443"]);
    assert_eq!(
        (e.key(), e.kind()),
        (
            Some("tls_cert_file"),
            &ErrorKind::RequiredWith("tls_listen")
        )
    );
    let e = fail(&["--tls-listen=127.0.0.1:8443", "--tls-cert-file=c.pem"]);
    assert_eq!(
        (e.key(), e.kind()),
        (
            Some("tls_key_file"),
            &ErrorKind::RequiredWith("tls_cert_file")
        )
    );
    let e = fail(&["--tls-key-file=k.pem"]);
    assert_eq!(e.key(), Some("tls_cert_file"));
    let e = fail(&[
        "--listen=127.0.0.1:8443",
        "--tls-listen=127.0.0.1:8443",
        "--tls-cert-file=c.pem",
        "--tls-key-file=k.pem",
    ]);
    assert_eq!(
        (e.key(), e.kind()),
        (Some("tls_listen"), &ErrorKind::SameAddressAs("listen"))
    );
    let e = fail(&["--tls-cert-file="]);
    assert_eq!(
        (e.key(), e.kind()),
        (Some("tls_cert_file"), &ErrorKind::EmptyPath)
    );
    // The files alone are allowed: socket activation may pass the TLS listener.
    let c = run(&["--tls-cert-file=c.pem", "--tls-key-file=k.pem"]);
    assert!(c.tls_enabled() && c.tls_listen.is_none());
}

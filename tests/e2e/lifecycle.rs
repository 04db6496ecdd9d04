//! The process: signals and drain, flags, `--check-config`, `--help`, `--version`
//! (docs/protocol.md §12, §16).

use std::io::Write;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_devices_ends_streams_and_exits_0() {
    let mut d = Daemon::start(&["--shutdown-timeout-secs", "2"]);
    let mut dev = d.device("s1").await;
    let mut s = d
        .send(&json!({"user_id":"s1","data":{"correlation_id":"bye"},"event_type":"message"}))
        .await;
    s.assert_stream_head();
    dev.recv_json().await;
    let started = tokio::time::Instant::now();
    d.signal("TERM");
    let ev = s.next_event(step()).await;
    assert_eq!(ev.event.as_deref(), Some("message"));
    assert_eq!(
        ev.json(),
        json!({"error":"Server shutting down","correlation_id":"bye"})
    );
    s.expect_end(step()).await;
    let (code, _) = dev.expect_close(step()).await;
    assert_eq!(code, 1001);
    let status = d
        .wait_exit(t(2.0) + t(3.0))
        .await
        .expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(started.elapsed() < t(2.0) + t(3.0));
}

#[tokio::test]
async fn sigint_drains_and_exits_0() {
    let mut d = Daemon::start(&["--shutdown-timeout-secs", "2"]);
    let mut dev = d.device("s1").await;
    d.signal("INT");
    assert_eq!(dev.expect_close(step()).await.0, 1001);
    let status = d.wait_exit(t(5.0)).await.expect("no exit after SIGINT");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_idle_daemon_exits_0_promptly_and_stops_listening() {
    let mut d = Daemon::start(&[]);
    let addr = d.addr;
    // A keep-alive connection must not hold the drain for the whole shutdown timeout.
    let mut c = d.http().await;
    c.assert_usable().await;
    d.signal("TERM");
    let status = d.wait_exit(t(4.0)).await.expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test]
async fn sigterm_answers_a_push_in_flight() {
    let mut d = Daemon::start(&["--shutdown-timeout-secs", "2"]);
    let _dev = d.device("s1").await;
    // A push whose body is still arriving when the signal comes.
    let body = r#"{"user_id":"s1","data":{"n":1}}"#;
    let mut c = d.http().await;
    c.send(
        format!(
            "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..5]
        )
        .as_bytes(),
    )
    .await;
    d.signal("TERM");
    // Either the push is answered (success or partial) or the connection closes: no hang.
    let _ = c.try_send(&body.as_bytes()[5..]).await;
    let deadline = tokio::time::Instant::now() + t(5.0);
    while !c.buffered().windows(4).any(|w| w == b"\r\n\r\n") {
        match c.fill(deadline).await {
            Ok(_) => {}
            Err(ReadEnd::Closed) => break,
            Err(ReadEnd::TimedOut) => panic!("push in flight hangs during shutdown"),
        }
    }
    let text = String::from_utf8_lossy(c.buffered()).to_string();
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 200"),
        "push in flight answered {text}"
    );
    let status = d.wait_exit(t(5.0)).await.expect("no exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bad_settings_exit_2_with_one_line_naming_the_key() {
    let cases: [(&[&str], &str); 9] = [
        (&["--queue-depth", "0"], "queue"),
        (&["--queue-depth", "abc"], "queue"),
        (&["--queue-depth", "-3"], "queue"),
        (&["--send-timeout-secs", "0"], "send"),
        (&["--on-duplicate", "maybe"], "duplicate"),
        (&["--listen", "nonsense"], "listen"),
        (&["--log-level", "loud"], "log"),
        (&["--public-accounts", "bad-name"], "public"),
        (&["--max-connections", "100000000"], "connections"),
    ];
    for (args, key) in cases {
        let (status, out, err) = run_to_exit(args);
        assert_eq!(
            status.code(),
            Some(2),
            "{args:?}: stdout {out} stderr {err}"
        );
        let text = err.trim();
        assert_eq!(text.lines().count(), 1, "{args:?}: not one line: {text:?}");
        assert!(
            text.to_ascii_lowercase().contains(key),
            "{args:?}: line does not name the key: {text:?}"
        );
    }
}

#[test]
fn unknown_flag_exits_2_with_one_line() {
    let (status, _, err) = run_to_exit(&["--no-such-flag", "1"]);
    assert_eq!(status.code(), Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    assert!(err.contains("no-such-flag"), "{err:?}");
}

#[test]
fn flag_without_value_exits_2() {
    let (status, _, err) = run_to_exit(&["--queue-depth"]);
    assert_eq!(status.code(), Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
}

/// A file under the temp dir, removed when dropped (also when the test fails).
fn temp_config(name: &str, text: &str) -> TempPath {
    let path = TempPath::new(&format!("{name}.toml"));
    let mut f = std::fs::File::create(&path.0).expect("create temp config");
    f.write_all(text.as_bytes()).expect("write temp config");
    path
}

fn check_config(args: &[&str]) -> toml::Table {
    let mut all = vec!["--check-config"];
    all.extend_from_slice(args);
    let (status, out, err) = run_to_exit(&all);
    assert_eq!(status.code(), Some(0), "{all:?}: stderr {err}");
    out.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("--check-config output is not TOML ({e}): {out}"))
}

#[test]
fn check_config_prints_effective_settings_as_toml() {
    let t = check_config(&[
        "--queue-depth",
        "7",
        "--public-accounts",
        "ci_bot,deploy_bot",
    ]);
    assert_eq!(t["queue_depth"].as_integer(), Some(7));
    assert_eq!(
        t["public_accounts"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()),
        Some(vec!["ci_bot", "deploy_bot"])
    );
    // Defaults are shown too.
    assert_eq!(t["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(t["max_batch"].as_integer(), Some(1000));
    assert_eq!(t["on_duplicate"].as_str(), Some("reject"));
    // Unset secrets are left out.
    assert!(!t.contains_key("api_token"));
    assert!(!t.contains_key("ws_secret"));
}

#[test]
fn check_config_masks_secrets() {
    let (status, out, err) = run_to_exit(&[
        "--check-config",
        "--api-token",
        "s3cret-token",
        "--ws-secret",
        "hmac-key",
    ]);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        !out.contains("s3cret-token") && !out.contains("hmac-key"),
        "{out}"
    );
    assert!(
        !err.contains("s3cret-token") && !err.contains("hmac-key"),
        "{err}"
    );
    let t: toml::Table = out.parse().expect("TOML");
    assert_eq!(t["api_token"].as_str(), Some("***"));
    assert_eq!(t["ws_secret"].as_str(), Some("***"));
}

#[test]
fn check_config_flags_override_the_file_and_the_last_flag_wins() {
    let path = temp_config("override", "queue_depth = 9\nmax_batch = 5\n");
    let t = check_config(&[
        "--config",
        path.str(),
        "--queue-depth",
        "3",
        "--queue-depth",
        "4",
    ]);
    assert_eq!(t["queue_depth"].as_integer(), Some(4));
    assert_eq!(t["max_batch"].as_integer(), Some(5));
}

#[test]
fn config_file_errors_exit_2() {
    let unknown = temp_config("unknown", "queue_dept = 9\n");
    let bad_value = temp_config("badvalue", "queue_depth = 0\n");
    let broken = temp_config("broken", "queue_depth = \n");
    for path in [&unknown, &bad_value, &broken] {
        let p = path.str();
        let (status, _, err) = run_to_exit(&["--check-config", "--config", p]);
        assert_eq!(status.code(), Some(2), "{p}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{p}: {err:?}");
    }
    let (status, _, err) = run_to_exit(&["--config", "/nonexistent/wssed.toml"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
}

#[test]
fn help_and_version() {
    let (status, out, _) = run_to_exit(&["--help"]);
    assert_eq!(status.code(), Some(0));
    assert!(
        out.contains("--listen") && out.contains("--check-config"),
        "{out}"
    );
    let (status, out, _) = run_to_exit(&["--version"]);
    assert_eq!(status.code(), Some(0));
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    // The build says what it is (scripts/check-build-info.sh compares it with board/*/env).
    for key in ["target", "link", "board"] {
        assert!(out.contains(&format!("\n{key}: ")), "no {key} in {out}");
    }
    for key in ["device_table_capacity", "pending_table_capacity"] {
        let value = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in {out}"));
        let n: usize = value.parse().unwrap_or_else(|_| panic!("{key}: {value}"));
        assert!(n.is_power_of_two(), "{key}: {n}");
    }
}

#[tokio::test]
async fn a_flag_takes_effect() {
    // --max-batch 2 shows on the wire.
    let d = Daemon::start(&["--max-batch", "2"]);
    let item = json!({"user_id":"x","data":{}});
    let r = d.batch(&json!([item, item, item])).await;
    assert_422_has(&r, json!(["body"]), "too_long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_a_second_signal_exits_at_once_with_1() {
    // A device whose socket is full cannot take its 1001 close: the drain has to wait.
    let mut flags = STALL_FLAGS.to_vec();
    flags.extend(["--shutdown-timeout-secs", "30"]);
    let mut d = Daemon::start(&flags);
    let _s = stall_device(&d, StallUntil::QueueFull).await;
    let addr = d.addr;
    d.signal("TERM");
    wait_until(t(3.0), "the listener is closed", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    match d.wait_exit(std::time::Duration::from_millis(300)).await {
        // The daemon gave up on the stalled device at once: a clean exit.
        Some(status) => assert_eq!(status.code(), Some(0), "{status:?}"),
        None => {
            d.signal("TERM");
            let status = d
                .wait_exit(t(2.0))
                .await
                .expect("a second signal must exit at once");
            assert_eq!(status.code(), Some(1), "{status:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_ready_watchdog_and_stopping() {
    let path = TempPath::new("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path.0).expect("bind the notify socket");
    let p = path.str();
    let mut d = Daemon::start_with_env(&[], &[("NOTIFY_SOCKET", p), ("WATCHDOG_USEC", "1000000")]);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut recv = async |seen: &mut String, want: &str| {
        let deadline = tokio::time::Instant::now() + t(5.0);
        for _ in 0..1000 {
            if seen.lines().any(|l| l == want) {
                return;
            }
            let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {want} on NOTIFY_SOCKET; got {seen:?}"))
                .expect("recv");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
        panic!("too many notifications without {want}");
    };
    recv(&mut seen, "READY=1").await;
    assert!(
        seen.contains("STATUS="),
        "no STATUS= with READY=1: {seen:?}"
    );
    seen.clear();
    // Half of WATCHDOG_USEC: at least two pings within two seconds.
    recv(&mut seen, "WATCHDOG=1").await;
    seen.clear();
    recv(&mut seen, "WATCHDOG=1").await;
    d.signal("TERM");
    recv(&mut seen, "STOPPING=1").await;
    let status = d.wait_exit(t(5.0)).await.expect("exit");
    assert_eq!(status.code(), Some(0));
}

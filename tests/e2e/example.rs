//! `examples/device.rs` against the daemon: the operator's way to try a gateway must work.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::common::*;

/// The example binary: `WSSED_DEVICE_BIN`, else `examples/device` beside this test's `deps/`,
/// built on demand (`cargo test --test e2e` does not build examples).
fn device_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WSSED_DEVICE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join("examples").join("device");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "device"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example device");
        assert!(status.success(), "cargo build --example device failed");
    }
    assert!(bin.exists(), "no example binary at {}", bin.display());
    bin
}

/// The example process, killed by its PID when dropped.
struct Example(Child);

impl Example {
    fn start(args: &[&str]) -> Example {
        let child = Command::new(device_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the example device");
        Example(child)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

async fn assert_answers(d: &Daemon, user: &str, cid: &str) {
    let mut s = d
        .send(&json!({"user_id": user, "data": {"message": "hello", "correlation_id": cid}}))
        .await;
    s.assert_stream_head();
    let first: Value = s.next_event(step()).await.json();
    assert_eq!(first["type"], "response");
    assert_eq!(first["correlation_id"], cid);
    assert_eq!(first["data"]["message"], "echo: hello");
    let last: Value = s.next_event(step()).await.json();
    assert_eq!(last["is_final"], true);
    s.expect_end(step()).await;
}

#[tokio::test]
async fn example_device_answers_a_send() {
    let d = Daemon::start(&[]);
    let url = format!("ws://{}/ws", d.addr);
    let _ex = Example::start(&["--url", &url, "--user-id", "ex dev", "--max-attempts", "3"]);
    wait_until(t(30.0), "the example device connects", || async {
        d.connections().await == 1
    })
    .await;
    assert_answers(&d, "ex dev", "ex-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_device_reconnects_when_the_gateway_comes_back() {
    let mut first = Daemon::start(&[]);
    let addr = first.addr.to_string();
    let url = format!("ws://{addr}/ws");
    let _ex = Example::start(&[
        "--url",
        &url,
        "--user-id",
        "exdev",
        "--max-attempts",
        "20",
        "--max-backoff-secs",
        "1",
    ]);
    wait_until(t(30.0), "the example device connects", || async {
        first.connections().await == 1
    })
    .await;
    first.signal("TERM");
    first.wait_exit(t(10.0)).await.expect("first daemon exits");
    // The same port again (the last --listen wins).
    let second = Daemon::start(&["--listen", &addr]);
    wait_until(t(15.0), "the example device reconnects", || async {
        second.connections().await == 1
    })
    .await;
    assert_answers(&second, "exdev", "ex-2").await;
}

#[tokio::test]
async fn example_device_gives_up_after_max_attempts() {
    // A port nobody listens on: bind, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut ex = Example::start(&[
        "--url",
        &url,
        "--user-id",
        "x",
        "--max-attempts",
        "3",
        "--max-backoff-secs",
        "1",
    ]);
    let deadline = tokio::time::Instant::now() + t(15.0);
    let status = loop {
        if let Some(s) = ex.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the example never gave up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "giving up is a failure exit");
}

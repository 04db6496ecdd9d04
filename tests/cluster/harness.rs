//! A real `nats-server` on a 127.0.0.1 port of its own, and wssed nodes joined to it.
//!
//! The server is started with a bounded start canary (its port must answer with the NATS
//! `INFO` line) and ended by its PID. Without a `nats-server` the cluster tests say so and
//! pass without running, unless `WSSED_REQUIRE_NATS=1` (CI sets it), which makes them fail.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// The nats-server executable: `NATS_SERVER`, else the first `nats-server` on `PATH` or in
/// `/usr/sbin` (Debian's package puts it there).
fn nats_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// The nats-server to use, or `None` (after saying so) when there is none and none is
/// required.
pub(crate) fn nats_or_skip() -> Option<PathBuf> {
    match nats_bin() {
        Some(bin) => Some(bin),
        None if std::env::var("WSSED_REQUIRE_NATS").is_ok_and(|v| v == "1") => {
            panic!("WSSED_REQUIRE_NATS=1 but no nats-server (apt-get install nats-server)")
        }
        None => {
            eprintln!("cluster test skipped: no nats-server (apt-get install nats-server)");
            None
        }
    }
}

/// A free port on 127.0.0.1 (the kernel's pick; free when this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running nats-server. Dropping it kills it by its PID.
pub(crate) struct Nats {
    child: Option<Child>,
    bin: PathBuf,
    /// Flags after the address and port (`--auth TOKEN`).
    extra: Vec<String>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Nats {
    /// Starts a server on a free port.
    pub(crate) fn start(bin: &Path) -> Nats {
        Nats::start_with(bin, &[])
    }

    /// Starts a server on a free port with `extra` flags (`--auth TOKEN`).
    pub(crate) fn start_with(bin: &Path, extra: &[&str]) -> Nats {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut last = String::new();
        // The port is free when picked; another process may take it before the server does.
        for _ in 0..3 {
            match Nats::try_start(bin, free_port(), &extra) {
                Ok(n) => return n,
                Err(why) => last = why,
            }
        }
        panic!("nats-server would not start: {last}");
    }

    /// Starts a server again on the port of the one that was killed.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a killed server only");
        let mut last = String::new();
        for _ in 0..20 {
            match Nats::try_start(&self.bin, self.port, &self.extra) {
                Ok(mut n) => {
                    self.child = n.child.take();
                    self.log = Arc::clone(&n.log);
                    return;
                }
                // The old socket may linger for a moment.
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nats-server would not start again on {}: {last}", self.port);
    }

    fn try_start(bin: &Path, port: u16, extra: &[String]) -> Result<Nats, String> {
        let mut child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        capture_output(&mut child, &log, &Arc::default(), |_| {});
        let mut nats = Nats {
            child: Some(child),
            bin: bin.to_owned(),
            extra: extra.to_vec(),
            port,
            log,
        };
        // The canary: the port answers with the protocol's INFO line, within a bound.
        let deadline = std::time::Instant::now() + t(5.0);
        loop {
            if let Some(Ok(Some(status))) = nats.child.as_mut().map(Child::try_wait) {
                nats.child = None;
                return Err(format!("exited {status}: {}", nats.log_text()));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut head = [0u8; 5];
                if s.read_exact(&mut head).is_ok() && &head == b"INFO " {
                    return Ok(nats);
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "no INFO on {port} within the bound: {}",
                    nats.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, by its PID) and waits for it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- nats-server output ----\n{}\n----", self.log_text());
        }
    }
}

/// Starts a node named `name` joined to `nats`, with `args` after the cluster's.
pub(crate) fn node(nats: &Nats, name: &str, args: &[&str]) -> Daemon {
    node_at(&nats.url(), name, args)
}

/// Starts a node named `name` joined to the server at `url`.
pub(crate) fn node_at(url: &str, name: &str, args: &[&str]) -> Daemon {
    let mut all = vec![
        "--cluster-urls",
        url,
        "--node-name",
        name,
        "--cluster-timeout-secs",
        "5",
    ];
    all.extend_from_slice(args);
    Daemon::start(&all)
}

/// The `cluster` member of `/health`.
pub(crate) async fn cluster_health(d: &Daemon) -> Value {
    d.health()
        .await
        .get("cluster")
        .cloned()
        .expect("/health has a cluster member")
}

/// The `cluster` member of `/metrics`.
pub(crate) async fn cluster_metrics(d: &Daemon) -> Value {
    let m = d.get("/metrics").await.json();
    m.get("cluster")
        .cloned()
        .expect("/metrics has a cluster member")
}

/// Waits until `d`'s link is up and it has heard from `peers` other nodes.
pub(crate) async fn wait_up(d: &Daemon, peers: u64) {
    wait_until(
        t(10.0),
        &format!("{} is up with {peers} peers", d.addr),
        || async {
            let c = cluster_health(d).await;
            c["state"] == "up" && c["peers"].as_u64() >= Some(peers)
        },
    )
    .await;
}

/// Waits until every node is up and hears from all the others.
pub(crate) async fn wait_all_up(nodes: &[&Daemon]) {
    for d in nodes {
        wait_up(d, nodes.len() as u64 - 1).await;
    }
}

/// Local devices of `d` present in the cluster.
pub(crate) async fn present(d: &Daemon) -> u64 {
    cluster_metrics(d).await["present"]
        .as_u64()
        .expect("present is a count")
}

/// Connects device `user` to `d` and waits until it is present in the cluster (its
/// subscription in place, its claim settled), so other nodes can reach it.
pub(crate) async fn device_on(d: &Daemon, user: &str) -> Device {
    let before = present(d).await;
    let dev = d.device(user).await;
    wait_until(
        step(),
        &format!("{user} present in the cluster"),
        || async { present(d).await > before },
    )
    .await;
    dev
}

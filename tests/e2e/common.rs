//! The harness of the end-to-end tests: the daemon process, a raw HTTP/1.1 client that sends
//! exact bytes, an SSE stream reader and WebSocket device clients (tungstenite and raw).
//! Every wait is bounded; every bound is scaled by `WSSED_TIMEOUT_SCALE` so the same suite runs
//! under qemu. `WSSED_BIN` picks the executable, `WSSED_E2E_ARGS` adds flags to every daemon.
//! Only 127.0.0.1 is ever contacted.

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use futures_util::stream::StreamExt;
use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Factor applied to every bound, from `WSSED_TIMEOUT_SCALE` (default 1).
pub(crate) fn scale() -> f64 {
    std::env::var("WSSED_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0)
}

/// A bound of `secs` seconds, scaled for slow targets.
pub(crate) fn t(secs: f64) -> Duration {
    Duration::from_secs_f64(secs * scale())
}

/// The bound for one ordinary network step (a response, a frame).
pub(crate) fn step() -> Duration {
    t(5.0)
}

/// The daemon executable: `WSSED_BIN` when set (a cross build run under qemu), else this crate's.
pub(crate) fn bin_path() -> PathBuf {
    match std::env::var_os("WSSED_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_wssed")),
    }
}

/// Flags from `WSSED_E2E_ARGS` (whitespace separated) given to every daemon before the test's
/// own, so the suite can run against another mode (`--worker-threads 2`); the test's flags win.
pub(crate) fn extra_args() -> Vec<String> {
    std::env::var("WSSED_E2E_ARGS")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Runs the daemon with `args` to completion (for `--help`, bad flags, `--check-config`).
/// The child is killed by its PID if it outlives the bound.
pub(crate) fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    run_to_exit_with_env(args, &[])
}

/// `run_to_exit` with extra environment variables.
pub(crate) fn run_to_exit_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let mut child = Command::new(bin_path())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin_path().display()));
    let out = drain_in_thread(child.stdout.take());
    let err = drain_in_thread(child.stderr.take());
    let deadline = std::time::Instant::now() + t(10.0);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wssed {args:?} did not exit within {:?}", t(10.0));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    (status, out, err)
}

fn drain_in_thread<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A running daemon on 127.0.0.1 with an ephemeral port. Dropping it kills the child by its PID.
pub(crate) struct Daemon {
    child: Child,
    /// Where it listens (for TLS, when `listen` is off).
    pub addr: SocketAddr,
    /// Where it listens for TLS, when it does.
    #[allow(dead_code)] // tests/tls.rs
    pub tls_addr: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    /// Output readers still running; they end at the pipes' end, just after the exit.
    readers: Arc<AtomicUsize>,
    exited: Option<ExitStatus>,
}

/// What a start log line says about where the daemon listens.
enum Listening {
    Plain(SocketAddr),
    Tls(SocketAddr),
    /// `listen = "off"`: the TLS line came first, nothing more follows.
    PlainOff,
}

fn parse_listening(line: &str) -> Option<Listening> {
    if line.contains("plain listener off") {
        return Some(Listening::PlainOff);
    }
    if let Some(at) = line.find("listening for TLS on ") {
        return parse_addr(&line[at + "listening for TLS on ".len()..]).map(Listening::Tls);
    }
    parse_addr(&line[line.find("listening on ")? + "listening on ".len()..]).map(Listening::Plain)
}

fn parse_addr(rest: &str) -> Option<SocketAddr> {
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == ']'))
        .to_string();
    token.parse().ok()
}

/// Reads the child's stderr and stdout on threads of their own, line by line, into `log`,
/// calling `on_line` with each line first; `readers` counts the threads still reading. Bounded
/// by the child's life: the pipes end when it exits.
pub(crate) fn capture_output(
    child: &mut Child,
    log: &Arc<Mutex<Vec<String>>>,
    readers: &Arc<AtomicUsize>,
    on_line: impl Fn(&str) + Send + Clone + 'static,
) {
    for pipe in [
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let log = Arc::clone(log);
        let on_line = on_line.clone();
        let readers = Arc::clone(readers);
        readers.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            // Bounded by the child's life: the pipe ends when it exits.
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                on_line(&text);
                if let Ok(mut log) = log.lock() {
                    log.push(text);
                }
                line.clear();
            }
            readers.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

impl Daemon {
    /// Starts `wssed --listen 127.0.0.1:0 ARGS` and waits for its `listening on` line.
    pub(crate) fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// `start` with extra environment variables.
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(Command::new(bin_path()), args, env)
    }

    /// Starts the daemon the way systemd's socket activation does: `listener` (a descriptor
    /// this process leaves inheritable) becomes fd 3, with `LISTEN_FDS=1` and `LISTEN_PID` set
    /// to the daemon's own PID (the shell `exec`s it, keeping its PID).
    pub(crate) fn start_activated(listener_fd: i32, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_activated_named(&[(listener_fd, "")], args, env)
    }

    /// `start_activated` with several listeners, each with its `FileDescriptorName=`
    /// (`LISTEN_FDNAMES`; an empty name leaves the variable out), passed as fd 3, 4, ...
    pub(crate) fn start_activated_named(
        listeners: &[(i32, &str)],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dups: Vec<String> = listeners
            .iter()
            .enumerate()
            .map(|(i, (fd, _))| format!("exec {}<&{fd};", 3 + i))
            .collect();
        let names: Vec<&str> = listeners.iter().map(|(_, name)| *name).collect();
        let names = if names.iter().all(|n| n.is_empty()) {
            String::new()
        } else {
            format!("LISTEN_FDNAMES={} ", names.join(":"))
        };
        // bash, not sh: dash takes only one-digit descriptors in redirections.
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!(
                "{} LISTEN_PID=$$ LISTEN_FDS={} {names}exec \"$0\" \"$@\"",
                dups.join(" "),
                listeners.len()
            ))
            .arg(bin_path());
        Daemon::spawn(command, args, env)
    }

    /// Starts the daemon inside a control group: the shell writes its own PID into `procs`
    /// (the group's `cgroup.procs`) and `exec`s the daemon, so the daemon runs there from its
    /// first instruction and finds the group's memory limit at start.
    #[allow(dead_code)] // tests/boards.rs
    pub(crate) fn start_in_cgroup(procs: &std::path::Path, args: &[&str]) -> Daemon {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec \"$0\" \"$@\"",
                procs.display()
            ))
            .arg(bin_path());
        Daemon::spawn(command, args, &[])
    }

    fn spawn(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = command
            // Whatever runs the tests (systemd, a CI unit) must not leak its own sockets in.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra_args())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin_path().display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let readers = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std_mpsc::channel();
        capture_output(&mut child, &log, &readers, move |text| {
            if let Some(listening) = parse_listening(text) {
                let _ = tx.send(listening);
            }
        });
        // The TLS line comes first; the plain one (or "plain listener off") ends the start.
        let deadline = std::time::Instant::now() + t(10.0);
        let mut tls_addr = None;
        let started = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(Listening::Tls(addr)) => tls_addr = Some(addr),
                Ok(Listening::Plain(addr)) => break Ok(addr),
                Ok(Listening::PlainOff) => match tls_addr {
                    Some(addr) => break Ok(addr),
                    None => break Err(std_mpsc::RecvTimeoutError::Disconnected),
                },
                Err(e) => break Err(e),
            }
        };
        match started {
            Ok(addr) => Daemon {
                child,
                addr,
                tls_addr,
                log,
                readers,
                exited: None,
            },
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let text = log.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("wssed {args:?} never said `listening on` ({e:?}); exit {status:?}; output:\n{text}");
            }
        }
    }

    /// Everything the daemon wrote so far.
    pub(crate) fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The child's PID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`) to the daemon by its PID.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg("-s")
            .arg(name)
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }

    /// Waits (bounded) for the daemon to exit, and for its last output to be read, so that
    /// `log_text` then holds all of it (a fast binary exits before its lines are read).
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.exited {
                return Some(s);
            }
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(s);
                let drained = Instant::now() + step();
                while self.readers.load(Ordering::SeqCst) > 0 && Instant::now() < drained {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `ws://ADDR/ws?QUERY`.
    pub(crate) fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{}", self.addr, query)
    }

    /// A fresh HTTP connection.
    pub(crate) async fn http(&self) -> Http {
        Http::connect(self.addr).await
    }

    /// One request on a fresh connection.
    pub(crate) async fn request(&self, bytes: &[u8]) -> Response {
        let mut c = self.http().await;
        c.send(bytes).await;
        c.read_response().await
    }

    /// `GET path` on a fresh connection.
    pub(crate) async fn get(&self, path: &str) -> Response {
        self.request(&get(path)).await
    }

    /// `POST path` with a JSON body on a fresh connection.
    pub(crate) async fn post(&self, path: &str, body: &str) -> Response {
        self.request(&post(path, body)).await
    }

    /// `POST /sse/push`.
    pub(crate) async fn push(&self, msg: &Value) -> Response {
        self.post("/sse/push", &msg.to_string()).await
    }

    /// `POST /sse/push/batch`.
    pub(crate) async fn batch(&self, items: &Value) -> Response {
        self.post("/sse/push/batch", &items.to_string()).await
    }

    /// `POST /sse/send`, answered with an event stream (the head is checked by the caller).
    pub(crate) async fn send(&self, msg: &Value) -> SseStream {
        let mut c = self.http().await;
        c.send(&post("/sse/send", &msg.to_string())).await;
        SseStream::open(c).await
    }

    /// The `/health` body.
    pub(crate) async fn health(&self) -> Value {
        let r = self.get("/health").await;
        assert_eq!(r.status, 200, "/health: {}", r.text());
        r.json()
    }

    /// `/health`'s `connections`.
    pub(crate) async fn connections(&self) -> u64 {
        self.health()
            .await
            .get("connections")
            .and_then(Value::as_u64)
            .expect("connections is an integer")
    }

    /// Connects a device and waits until `/health` counts it, so pushes cannot race the upgrade.
    pub(crate) async fn device(&self, user_id: &str) -> Device {
        let before = self.connections().await;
        let dev = Device::connect(self, &format!("user_id={}", encode(user_id))).await;
        let want = before + 1;
        wait_until(
            step(),
            &format!("/health counts device {user_id}"),
            || async { self.connections().await >= want },
        )
        .await;
        dev
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- wssed output ----\n{}\n----", self.log_text());
        }
    }
}

/// Percent-encodes everything outside `[A-Za-z0-9_.-]`.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Polls `cond` every 20 ms until it holds; fails the test after `within`.
pub(crate) async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `s` is a UUID in its 8-4-4-4-12 hex form.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `GET path HTTP/1.1` with a Host.
pub(crate) fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// A device token for `ws_secret` = `secret`: `hex(HMAC-SHA256(secret, user_id))`, lower case.
pub(crate) fn device_token(secret: &str, user_id: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(user_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST path HTTP/1.1` with a JSON body and its Content-Length.
pub(crate) fn post(path: &str, body: &str) -> Vec<u8> {
    post_bytes(path, "application/json", body.as_bytes())
}

/// `POST path HTTP/1.1` with any content type and body bytes.
pub(crate) fn post_bytes(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: u8,
    /// Status code.
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test when it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?} {}", self.status, self.text()))
    }

    /// Asserts a JSON answer with the given status, its Content-Type and exact Content-Length.
    pub(crate) fn assert_json(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "status; body {}", self.text());
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "Content-Type {ct:?} for {status}"
        );
        assert_eq!(
            self.header("content-length").map(|v| v.trim().to_string()),
            Some(self.body.len().to_string()),
            "Content-Length of a JSON answer"
        );
        self.json()
    }

    /// Asserts an error answer: the status and a `{"detail": ...}` JSON body.
    pub(crate) fn assert_detail(&self, status: u16) -> Value {
        let v = self.assert_json(status);
        assert!(v.get("detail").is_some(), "no detail in {v}");
        v
    }
}

/// The `loc`s and `type`s of a 422 body, checking its FastAPI shape.
pub(crate) fn errors_422(r: &Response) -> Vec<(Value, String)> {
    let v = r.assert_json(422);
    let list = v
        .get("detail")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("422 detail is not a list: {v}"));
    assert!(!list.is_empty(), "422 with no errors: {v}");
    list.iter()
        .map(|e| {
            assert!(
                e.get("msg").and_then(Value::as_str).is_some(),
                "no msg in {e}"
            );
            let ty = e
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no type in {e}"))
                .to_string();
            let loc = e
                .get("loc")
                .cloned()
                .unwrap_or_else(|| panic!("no loc in {e}"));
            assert!(loc.is_array(), "loc is not a list in {e}");
            (loc, ty)
        })
        .collect()
}

/// Asserts that a 422 lists an error of `ty` at `loc`.
pub(crate) fn assert_422_has(r: &Response, loc: Value, ty: &str) {
    let errs = errors_422(r);
    assert!(
        errs.iter().any(|(l, t)| *l == loc && t == ty),
        "no {ty} at {loc} in {}",
        r.text()
    );
}

/// A client's byte stream to the daemon: TCP, or TLS over TCP (tests/tls.rs).
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// A raw HTTP/1.1 client connection: exact bytes out, parsed responses in.
pub(crate) struct Http {
    stream: Box<dyn Conn>,
    buf: Vec<u8>,
}

/// How a read ended when it did not return bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadEnd {
    /// The peer closed (EOF or reset).
    Closed,
    /// Nothing arrived in time.
    TimedOut,
}

impl Http {
    /// Connects to the daemon.
    pub(crate) async fn connect(addr: SocketAddr) -> Http {
        let stream = tokio::time::timeout(step(), TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let _ = stream.set_nodelay(true);
        Http::from_stream(stream)
    }

    /// Connects with a small receive buffer, for peers that must stall the daemon's writes.
    pub(crate) async fn connect_small_rcvbuf(addr: SocketAddr, bytes: u32) -> Http {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = tokio::time::timeout(step(), sock.connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Http::from_stream(stream)
    }

    /// Wraps a connected stream.
    pub(crate) fn from_stream(stream: TcpStream) -> Http {
        Http::from_conn(Box::new(stream))
    }

    /// Wraps a connected stream of any kind (a TLS one).
    pub(crate) fn from_conn(stream: Box<dyn Conn>) -> Http {
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes`.
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(step(), self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Writes, tolerating a peer that already closed (returns whether it all went out).
    pub(crate) async fn try_send(&mut self, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(step(), self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Reads more bytes into the buffer; `Ok(n)` with n > 0, or how it ended.
    pub(crate) async fn fill(&mut self, deadline: Instant) -> Result<usize, ReadEnd> {
        let mut tmp = [0u8; 16384];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
            Err(_) => Err(ReadEnd::TimedOut),
            Ok(Ok(0)) | Ok(Err(_)) => Err(ReadEnd::Closed),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
        }
    }

    async fn fill_or_fail(&mut self, deadline: Instant, what: &str) {
        if let Err(e) = self.fill(deadline).await {
            panic!(
                "{what}: {e:?}; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// This end's address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.stream.tcp().local_addr().expect("local address")
    }

    /// Closes with a TCP reset (SO_LINGER 0): a peer that vanishes abruptly.
    pub(crate) fn reset(self) {
        let _ = socket2::SockRef::from(self.stream.tcp()).set_linger(Some(Duration::ZERO));
        drop(self);
    }

    /// Bytes received but not consumed yet.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads one response head (status line and headers), leaving the body buffered.
    pub(crate) async fn read_head(&mut self) -> Response {
        self.read_head_within(step()).await
    }

    /// `read_head` with its own bound.
    pub(crate) async fn read_head_within(&mut self, within: Duration) -> Response {
        let deadline = Instant::now() + within;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let r = Response {
                        version: resp.version.unwrap_or(9),
                        status: resp.code.unwrap_or(0),
                        headers: resp
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        body: Vec::new(),
                    };
                    self.buf.drain(..n);
                    return r;
                }
                Ok(httparse::Status::Partial) => self.fill_or_fail(deadline, "response head").await,
                Err(e) => panic!(
                    "bad response head ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Reads one whole response to a non-HEAD request.
    pub(crate) async fn read_response(&mut self) -> Response {
        self.read_response_to(false).await
    }

    /// `read_response` for an answer that may take up to `within` to start.
    pub(crate) async fn read_response_within(&mut self, within: Duration) -> Response {
        let mut r = self.read_head_within(within).await;
        self.read_body(&mut r, false).await;
        r
    }

    /// Reads one whole response; `head_request` means no body follows whatever the headers say.
    pub(crate) async fn read_response_to(&mut self, head_request: bool) -> Response {
        let mut r = self.read_head().await;
        self.read_body(&mut r, head_request).await;
        r
    }

    async fn read_body(&mut self, r: &mut Response, head_request: bool) {
        if head_request || r.status < 200 || r.status == 204 || r.status == 304 {
            return;
        }
        let deadline = Instant::now() + step();
        let chunked = r
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            while let Some(chunk) = self.read_chunk(deadline).await {
                r.body.extend_from_slice(&chunk);
            }
        } else if let Some(len) = r.header("content-length") {
            let len: usize = len.trim().parse().expect("numeric Content-Length");
            r.body = self.read_exact_n(len, deadline).await;
        } else {
            r.body = self.read_to_eof(deadline).await;
        }
    }

    /// Takes exactly `n` bytes.
    pub(crate) async fn read_exact_n(&mut self, n: usize, deadline: Instant) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill_or_fail(deadline, "body").await;
        }
        self.buf.drain(..n).collect()
    }

    /// Takes everything until the peer closes.
    pub(crate) async fn read_to_eof(&mut self, deadline: Instant) -> Vec<u8> {
        loop {
            match self.fill(deadline).await {
                Ok(_) => {}
                Err(ReadEnd::Closed) => return std::mem::take(&mut self.buf),
                Err(ReadEnd::TimedOut) => panic!(
                    "no EOF ending a close-delimited body; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    pub(crate) async fn read_line(&mut self, deadline: Instant) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).take(i).collect();
                return line;
            }
            self.fill_or_fail(deadline, "line").await;
        }
    }

    /// Takes one chunk of a chunked body; `None` after the last chunk and its trailers.
    pub(crate) async fn read_chunk(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        let line = self.read_line(deadline).await;
        let line = String::from_utf8_lossy(&line).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            // Trailers, if any, end with an empty line.
            while !self.read_line(deadline).await.is_empty() {}
            return None;
        }
        let data = self.read_exact_n(size, deadline).await;
        let crlf = self.read_exact_n(2, deadline).await;
        assert_eq!(crlf, b"\r\n", "chunk data not followed by CRLF");
        Some(data)
    }

    /// Asserts the peer closes within `within` without sending anything more.
    pub(crate) async fn expect_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            assert!(
                self.buf.is_empty(),
                "expected the connection to close, got bytes {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            match self.fill(deadline).await {
                Ok(_) => {}
                Err(ReadEnd::Closed) => return,
                Err(ReadEnd::TimedOut) => {
                    panic!("connection still open after {within:?}")
                }
            }
        }
    }

    /// Whether the peer closed within `within` (bytes received meanwhile stay buffered).
    pub(crate) async fn closes_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.fill(deadline).await {
                Ok(_) => {}
                Err(ReadEnd::Closed) => return true,
                Err(ReadEnd::TimedOut) => return false,
            }
        }
    }

    /// Asserts the connection still serves requests: `GET /health` answers 200.
    pub(crate) async fn assert_usable(&mut self) {
        self.send(&get("/health")).await;
        let r = self.read_response().await;
        assert_eq!(r.status, 200, "follow-up request on the same connection");
    }
}

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SseItem {
    /// An event: its `event:` field and its `data:` lines joined by `\n`.
    Event {
        /// The `event:` field.
        event: Option<String>,
        /// The joined `data:` lines.
        data: String,
        /// How many `data:` lines it had.
        lines: usize,
    },
    /// A comment line (without the colon).
    Comment(String),
    /// The response body ended.
    End,
}

/// An SSE event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// The `event:` field.
    pub event: Option<String>,
    /// The joined `data:` lines.
    pub data: String,
    /// How many `data:` lines it had.
    pub lines: usize,
}

impl Event {
    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// The reading side of a `/sse/send` response.
pub(crate) struct SseStream {
    /// The connection (usable again once the stream ended, when keep-alive).
    pub http: Http,
    /// The response head.
    pub head: Response,
    chunked: bool,
    decoded: Vec<u8>,
    finished: bool,
    pending_event: Option<String>,
    pending_data: Vec<String>,
}

impl SseStream {
    /// Reads the head of a response; the body is read item by item.
    pub(crate) async fn open(mut http: Http) -> SseStream {
        let head = http.read_head().await;
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        SseStream {
            http,
            head,
            chunked,
            decoded: Vec::new(),
            finished: false,
            pending_event: None,
            pending_data: Vec::new(),
        }
    }

    /// Whether the body is chunked.
    pub(crate) fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// Asserts the head of a successful stream (docs/protocol.md §7.3).
    pub(crate) fn assert_stream_head(&self) {
        let h = &self.head;
        assert_eq!(h.status, 200, "send status; headers {:?}", h.headers);
        assert_eq!(
            h.header("content-type").map(str::trim),
            Some("text/event-stream"),
            "Content-Type"
        );
        assert_eq!(h.header("cache-control").map(str::trim), Some("no-cache"));
        assert_eq!(h.header("x-accel-buffering").map(str::trim), Some("no"));
    }

    fn parse_line(&mut self) -> Option<SseItem> {
        loop {
            let i = self.decoded.iter().position(|&b| b == b'\n')?;
            let mut line: Vec<u8> = self.decoded.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).expect("SSE is UTF-8");
            if line.is_empty() {
                if self.pending_data.is_empty() && self.pending_event.is_none() {
                    continue;
                }
                let data = std::mem::take(&mut self.pending_data);
                return Some(SseItem::Event {
                    event: self.pending_event.take(),
                    lines: data.len(),
                    data: data.join("\n"),
                });
            }
            if let Some(c) = line.strip_prefix(':') {
                return Some(SseItem::Comment(c.trim_start().to_string()));
            }
            let (field, value) = match line.find(':') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line.as_str(), ""),
            };
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "data" => self.pending_data.push(value),
                "event" => self.pending_event = Some(value),
                _ => {}
            }
        }
    }

    /// The next item, within `within`; fails the test on timeout.
    pub(crate) async fn next(&mut self, within: Duration) -> SseItem {
        let deadline = Instant::now() + within;
        loop {
            if let Some(item) = self.parse_line() {
                return item;
            }
            if self.finished {
                assert!(
                    self.decoded.is_empty() && self.pending_data.is_empty(),
                    "stream ended inside an event: {:?}",
                    String::from_utf8_lossy(&self.decoded)
                );
                return SseItem::End;
            }
            if self.chunked {
                let next = tokio::time::timeout_at(deadline, self.http.read_chunk(deadline))
                    .await
                    .unwrap_or_else(|_| panic!("no SSE item within {within:?}"));
                match next {
                    Some(data) => self.decoded.extend_from_slice(&data),
                    None => self.finished = true,
                }
            } else {
                match self.http.fill(deadline).await {
                    Ok(_) => self.decoded.append(&mut self.http.buf),
                    Err(ReadEnd::Closed) => self.finished = true,
                    Err(ReadEnd::TimedOut) => panic!("no SSE item within {within:?}"),
                }
            }
        }
    }

    /// The next event, skipping comments; fails on timeout or end.
    pub(crate) async fn next_event(&mut self, within: Duration) -> Event {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                SseItem::Event { event, data, lines } => return Event { event, data, lines },
                SseItem::Comment(_) => {}
                SseItem::End => panic!("stream ended while an event was expected"),
            }
        }
    }

    /// Asserts the stream ends (skipping comments) with no further event.
    pub(crate) async fn expect_end(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                SseItem::End => return,
                SseItem::Comment(_) => {}
                e @ SseItem::Event { .. } => panic!("expected the end of the stream, got {e:?}"),
            }
        }
    }

    /// Asserts one error event `{"error": text, "correlation_id": id}` and then the end.
    pub(crate) async fn expect_error_end(&mut self, text: &str, id: &str, within: Duration) {
        let ev = self.next_event(within).await;
        let v = ev.json();
        assert_eq!(v.get("error").and_then(Value::as_str), Some(text), "{v}");
        assert_eq!(
            v.get("correlation_id").and_then(Value::as_str),
            Some(id),
            "{v}"
        );
        self.expect_end(step()).await;
    }
}

/// The sending half of a device's WebSocket, whatever stream it runs on.
type WsSink = std::pin::Pin<
    Box<dyn futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Send>,
>;

/// What a device client got from the daemon.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame: code and reason.
    Close(Option<(u16, String)>),
    /// The stream ended (with the error text, if any).
    End(Option<String>),
}

/// A well-behaved device on tungstenite: a reader task keeps reading (so pings are answered)
/// and hands frames over a bounded channel.
pub(crate) struct Device {
    sink: WsSink,
    rx: mpsc::Receiver<Incoming>,
    reader: JoinHandle<()>,
}

impl Device {
    /// Upgrades `/ws?QUERY`; the daemon may still close the session right away.
    pub(crate) async fn connect(d: &Daemon, query: &str) -> Device {
        let url = d.ws_url(query);
        let (ws, resp) = tokio::time::timeout(
            step(),
            tokio_tungstenite::connect_async_with_config(url.as_str(), None, true),
        )
        .await
        .unwrap_or_else(|_| panic!("upgrade of {url} timed out"))
        .unwrap_or_else(|e| panic!("upgrade of {url} failed: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        Device::from_ws(ws)
    }

    /// A device on an upgraded WebSocket over any stream (a TLS one).
    pub(crate) fn from_ws<S>(ws: WebSocketStream<S>) -> Device
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::channel(256);
        let reader = tokio::spawn(async move {
            loop {
                let item = match stream.next().await {
                    Some(Ok(Message::Text(t))) => Incoming::Text(t.to_string()),
                    Some(Ok(Message::Binary(b))) => Incoming::Binary(b.to_vec()),
                    Some(Ok(Message::Close(f))) => {
                        Incoming::Close(f.map(|f| (u16::from(f.code), f.reason.to_string())))
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Incoming::End(Some(e.to_string())),
                    None => Incoming::End(None),
                };
                let last = matches!(item, Incoming::End(_));
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Device {
            sink: Box::pin(sink),
            rx,
            reader,
        }
    }

    /// The next thing received, within `within`; `None` on timeout.
    pub(crate) async fn recv(&mut self, within: Duration) -> Option<Incoming> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(item)) => Some(item),
            Ok(None) => Some(Incoming::End(None)),
            Err(_) => None,
        }
    }

    /// The next text frame; fails the test on anything else.
    pub(crate) async fn recv_text(&mut self) -> String {
        match self.recv(step()).await {
            Some(Incoming::Text(t)) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame as JSON.
    pub(crate) async fn recv_json(&mut self) -> Value {
        let t = self.recv_text().await;
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("frame is not JSON ({e}): {t}"))
    }

    /// The next thing must be a close frame: its code and reason.
    pub(crate) async fn expect_close(&mut self, within: Duration) -> (u16, String) {
        match self.recv(within).await {
            Some(Incoming::Close(Some(c))) => c,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Sends a text frame.
    pub(crate) async fn send_text(&mut self, text: &str) {
        tokio::time::timeout(step(), self.sink.send(Message::text(text.to_string())))
            .await
            .expect("device send timed out")
            .expect("device send");
    }

    /// Sends a raw message.
    pub(crate) async fn send_message(&mut self, m: Message) -> bool {
        matches!(
            tokio::time::timeout(step(), self.sink.send(m)).await,
            Ok(Ok(()))
        )
    }

    /// Does the close handshake: sends a close frame and waits for the daemon's.
    pub(crate) async fn close(mut self) {
        let _ = self.send_message(Message::Close(None)).await;
        let deadline = Instant::now() + step();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(Incoming::Close(_)) | Some(Incoming::End(_)) => return,
                Some(_) => {}
                None => panic!("no close frame back from the daemon"),
            }
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Settings for tests with a stalled device: a tiny queue, and a pong timeout short enough that
/// the daemon drops a device that stopped reading within a test's time.
pub(crate) const STALL_FLAGS: [&str; 6] = [
    "--queue-depth",
    "2",
    "--ping-interval-secs",
    "60",
    "--pong-timeout-secs",
    "3",
];

/// How far `stall_device` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StallUntil {
    /// Until a push waits: the daemon's writes to the device are blocked.
    WritesBlock,
    /// Until a push is 503: the device's queue is full as well.
    QueueFull,
}

/// A device `slow` that completed the upgrade and never reads, and the pushes sent to it.
pub(crate) struct Stalled {
    /// The device's connection, kept open.
    pub _raw: RawWs,
    /// Pushes sent but not answered yet.
    pub waiting: Vec<Http>,
    /// The 503 answer, with `StallUntil::QueueFull`.
    pub full: Option<Response>,
}

impl Stalled {
    /// The 503 answer.
    pub(crate) fn full(&self) -> &Response {
        self.full
            .as_ref()
            .expect("stalled until the queue was full")
    }
}

/// Connects device `user` with a 4 KiB receive buffer, so that a daemon writing to it stalls
/// fast once it stops reading, and waits until the daemon counts it connected.
pub(crate) async fn unread_device(d: &Daemon, user: &str) -> RawWs {
    let want = d.connections().await + 1;
    let raw = RawWs::upgrade_on(
        Http::connect_small_rcvbuf(d.addr, 4096).await,
        &format!("user_id={user}"),
    )
    .await;
    wait_until(step(), "device registered", || async {
        d.connections().await >= want
    })
    .await;
    raw
}

/// Connects device `slow` with a small receive buffer and pushes 60 KB frames to it until
/// `until` holds (bounded in count and time).
pub(crate) async fn stall_device(d: &Daemon, until: StallUntil) -> Stalled {
    let raw = unread_device(d, "slow").await;
    let body = serde_json::json!({"user_id":"slow","data":{"pad":"x".repeat(60_000)}}).to_string();
    let mut waiting: Vec<Http> = Vec::new();
    let deadline = Instant::now() + t(20.0);
    for _ in 0..2000 {
        if Instant::now() > deadline {
            break;
        }
        let mut c = Http::connect(d.addr).await;
        c.send(&post("/sse/push", &body)).await;
        // A push whose frame cannot be written yet waits; give it a moment, then move on.
        match tokio::time::timeout(t(0.3), c.read_head()).await {
            Err(_) => {
                waiting.push(c);
                if until == StallUntil::WritesBlock {
                    return Stalled {
                        _raw: raw,
                        waiting,
                        full: None,
                    };
                }
            }
            Ok(mut head) => {
                let len: usize = head
                    .header("content-length")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                head.body = c.read_exact_n(len, Instant::now() + step()).await;
                if head.status == 503 {
                    return Stalled {
                        _raw: raw,
                        waiting,
                        full: Some(head),
                    };
                }
                assert_eq!(head.status, 200, "push while filling: {}", head.text());
            }
        }
    }
    panic!(
        "the device never stalled although it never reads ({} pushes waiting)",
        waiting.len()
    );
}

/// A device spoken to frame by frame over raw TCP: it answers nothing unless told to.
pub(crate) struct RawWs {
    /// The connection.
    pub http: Http,
}

/// A client handshake request for `/ws?QUERY`.
pub(crate) fn upgrade_request(query: &str) -> Vec<u8> {
    format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// One frame from the daemon.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong).
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

impl RawWs {
    /// Upgrades over `http` and checks the 101.
    pub(crate) async fn upgrade_on(mut http: Http, query: &str) -> RawWs {
        http.send(&upgrade_request(query)).await;
        let head = http.read_head().await;
        assert_eq!(head.status, 101, "upgrade: {:?}", head.headers);
        assert_eq!(
            head.header("sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "accept key"
        );
        RawWs { http }
    }

    /// Connects and upgrades `/ws?QUERY`.
    pub(crate) async fn upgrade(d: &Daemon, query: &str) -> RawWs {
        RawWs::upgrade_on(d.http().await, query).await
    }

    /// Sends one masked frame.
    pub(crate) async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> bool {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.http.try_send(&f).await
    }

    /// The next frame; `None` when the daemon closed the TCP connection.
    pub(crate) async fn read_frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((frame, used)) = parse_frame(&self.http.buf) {
                self.http.buf.drain(..used);
                return Some(frame);
            }
            match self.http.fill(deadline).await {
                Ok(_) => {}
                Err(ReadEnd::Closed) => return None,
                Err(ReadEnd::TimedOut) => panic!("no frame within {within:?}"),
            }
        }
    }

    /// Reads frames until a close frame or EOF: the close code, if a close frame came.
    pub(crate) async fn expect_close(&mut self, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                None => return None,
                Some(f) if f.opcode == 8 => {
                    return f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))
                }
                Some(_) => {}
            }
        }
        panic!("too many frames before the close");
    }
}

fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    let b0 = *b.first()?;
    let b1 = *b.get(1)?;
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => {
            let mut x = [0u8; 8];
            x.copy_from_slice(b.get(2..10)?);
            (u64::from_be_bytes(x) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m = b.get(at..at + 4)?.to_vec();
        at += 4;
        Some(m)
    } else {
        None
    };
    let mut payload = b.get(at..at + len)?.to_vec();
    if let Some(m) = mask {
        for (i, x) in payload.iter_mut().enumerate() {
            *x ^= m[i % 4];
        }
    }
    Some((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload,
        },
        at + len,
    ))
}

/// A file path in the temp directory, unique per test process and call, removed on drop.
pub(crate) struct TempPath(pub std::path::PathBuf);

impl TempPath {
    /// A fresh path ending in `name` (nothing is created).
    pub(crate) fn new(name: &str) -> TempPath {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("wssed-e2e-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    /// The path as text.
    pub(crate) fn str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

//! TLS against plain, side by side on one daemon (BENCHMARKS.md "TLS"): handshakes per
//! second, server CPU per push and push latency (p50/p99) with the upstream and the device
//! both on TLS or both plain, and resident bytes per idle device on each port.
//!
//!   cargo run --release --example tls_bench -- BINARY CA.pem CERT.pem KEY.pem [DEVICES] [PUSHES]
//!
//! BINARY is a wssed built with `--features tls`; the certificate must be for `localhost`
//! (scripts/tls-bench.sh makes one). Only 127.0.0.1 is contacted; every loop is bounded.
//! Prints one JSON line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const PLAIN_PORT: u16 = 18_180;
const TLS_PORT: u16 = 18_543;
/// How long the handshake loop runs per port.
const HANDSHAKE_SECS: u64 = 5;

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

struct Bench {
    tls: TlsConnector,
}

impl Bench {
    async fn connect(&self, tls: bool) -> Box<dyn Conn> {
        let port = if tls { TLS_PORT } else { PLAIN_PORT };
        let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("connect");
        tcp.set_nodelay(true).unwrap();
        if tls {
            let name = ServerName::try_from("localhost").unwrap();
            Box::new(self.tls.connect(name, tcp).await.expect("handshake"))
        } else {
            Box::new(tcp)
        }
    }
}

/// Reads one HTTP response (Content-Length framed); returns its body.
async fn response(c: &mut Box<dyn Conn>, buf: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return body;
            }
        }
        let mut tmp = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut tmp))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Server CPU time so far (user + system), from /proc/PID/stat, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn handshakes(b: &Bench, tls: bool) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    let mut buf = Vec::new();
    while started.elapsed() < Duration::from_secs(HANDSHAKE_SECS) && n < 1_000_000 {
        let mut c = b.connect(tls).await;
        c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        buf.clear();
        response(&mut c, &mut buf).await;
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `pushes` pushes one after the other to a device on the same kind of port.
async fn pushes(b: &Bench, pid: u32, tls: bool, pushes: usize) -> (f64, f64, f64) {
    let user = if tls { "bench_tls" } else { "bench_plain" };
    let mut dev = device(b, tls, user).await;
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        while got < pushes {
            match dev.next().await {
                Some(Ok(m)) if m.is_text() => got += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        got
    });
    let mut up = b.connect(tls).await;
    let body = format!(r#"{{"user_id":"{user}","data":{{"message":"benchmark payload","n":1}}}}"#);
    let request = format!(
        "POST /sse/push HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = Vec::new();
    let mut lat = Vec::with_capacity(pushes);
    let cpu0 = cpu_ticks(pid);
    for _ in 0..pushes {
        let t = Instant::now();
        up.write_all(request.as_bytes()).await.unwrap();
        let answer = response(&mut up, &mut buf).await;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(answer.starts_with(br#"{"status":"success""#));
    }
    let cpu = cpu_ticks(pid) - cpu0;
    assert_eq!(reader.await.unwrap(), pushes);
    lat.sort_by(f64::total_cmp);
    let tick_us = 1e6 / 100.0; // USER_HZ
    (
        cpu as f64 * tick_us / pushes as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    )
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Conn>>;

async fn device(b: &Bench, tls: bool, user: &str) -> Ws {
    let c = b.connect(tls).await;
    let scheme = if tls { "wss" } else { "ws" };
    let port = if tls { TLS_PORT } else { PLAIN_PORT };
    let url = format!("{scheme}://localhost:{port}/ws?user_id={user}");
    let (ws, _) = tokio_tungstenite::client_async(url, c)
        .await
        .expect("upgrade");
    ws
}

async fn idle_devices(b: &Bench, pid: u32, tls: bool, n: usize) -> (f64, Vec<Ws>) {
    let before = rss_bytes(pid);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let prefix = if tls { "idle_tls" } else { "idle_plain" };
        held.push(device(b, tls, &format!("{prefix}_{i}")).await);
    }
    // Every session registered and settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(pid);
    ((after.saturating_sub(before)) as f64 / n as f64, held)
}

fn start(bin: &str, cert: &str, key: &str, devices: usize) -> Child {
    let mut child = Command::new("taskset")
        .args(["-c", "0", bin, "--listen"])
        .arg(format!("127.0.0.1:{PLAIN_PORT}"))
        .arg("--tls-listen")
        .arg(format!("127.0.0.1:{TLS_PORT}"))
        .args([
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--log-level",
            "warn",
        ])
        .args(["--max-connections", &(2 * devices + 16).to_string()])
        .args(["--ping-interval-secs", "3600"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wssed");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", TLS_PORT)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("wssed did not start");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, bin, ca, cert, key, rest @ ..] = args.as_slice() else {
        panic!("usage: tls_bench BINARY CA.pem CERT.pem KEY.pem [DEVICES] [PUSHES]");
    };
    let devices: usize = rest.first().map_or(1000, |s| s.parse().unwrap());
    let n_pushes: usize = rest.get(1).map_or(20_000, |s| s.parse().unwrap());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let b = Bench {
        tls: TlsConnector::from(Arc::new(config)),
    };
    let mut child = start(bin, cert, key, devices);
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let hs_plain = handshakes(&b, false).await;
        let hs_tls = handshakes(&b, true).await;
        let (cpu_plain, p50_plain, p99_plain) = pushes(&b, pid, false, n_pushes).await;
        let (cpu_tls, p50_tls, p99_tls) = pushes(&b, pid, true, n_pushes).await;
        let (rss_plain, held_plain) = idle_devices(&b, pid, false, devices).await;
        let (rss_tls, held_tls) = idle_devices(&b, pid, true, devices).await;
        drop((held_plain, held_tls));
        format!(
            "{{\"connects_per_sec\":{{\"plain\":{hs_plain:.0},\"tls\":{hs_tls:.0}}},\
             \"push_cpu_us\":{{\"plain\":{cpu_plain:.1},\"tls\":{cpu_tls:.1}}},\
             \"push_p50_us\":{{\"plain\":{p50_plain:.1},\"tls\":{p50_tls:.1}}},\
             \"push_p99_us\":{{\"plain\":{p99_plain:.1},\"tls\":{p99_tls:.1}}},\
             \"idle_device_rss_bytes\":{{\"plain\":{rss_plain:.0},\"tls\":{rss_tls:.0}}},\
             \"devices\":{devices},\"pushes\":{n_pushes}}}"
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    println!("{out}");
}

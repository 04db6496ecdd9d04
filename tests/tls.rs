//! TLS end to end (README "TLS", docs/protocol.md §19): the real binary built with the `tls`
//! feature, real TLS clients (rustls, the WebSocket client over it, curl where the README
//! uses it) against a CA made at test time with the same openssl commands README gives.
//! Only 127.0.0.1 is contacted; every wait is bounded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::large_futures,
    clippy::needless_pass_by_value
)]

// The shared harness; this suite uses part of it.
#[allow(dead_code)]
#[path = "e2e/common.rs"]
mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use common::*;

impl Conn for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A scratch folder removed when the test ends.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = TempPath::new(name);
        let path = p.0.clone();
        drop(p);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// Runs `script` with bash in this folder; fails the test when it fails.
    fn sh(&self, script: &str) {
        let out = Command::new("bash")
            .arg("-euc")
            .arg(script)
            .current_dir(&self.0)
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A local CA and the gateway's certificate, made with README's commands.
struct Pki {
    dir: Dir,
}

impl Pki {
    /// CA `name` and a certificate for localhost / 127.0.0.1 valid `days` (negative: expired).
    fn new(name: &str, days: i32) -> Pki {
        let dir = Dir::new(name);
        dir.sh(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
               -keyout ca.key -out ca.pem -days 3650 -subj '/CN=wssed test CA' 2>/dev/null",
        );
        let pki = Pki { dir };
        pki.issue("gw", "localhost", days);
        pki
    }

    /// A key `NAME.key` and certificate `NAME.pem` for `cn` (and localhost, 127.0.0.1).
    fn issue(&self, name: &str, cn: &str, days: i32) {
        self.dir.sh(&format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
               -keyout {name}.key -out {name}.csr -subj '/CN={cn}' 2>/dev/null
             printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > {name}.ext
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
               -days {days} -extfile {name}.ext -out {name}.pem 2>/dev/null"
        ));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    fn str(&self, name: &str) -> String {
        self.dir.str(name)
    }

    /// The flags serving `NAME.pem` / `NAME.key` on an ephemeral TLS port.
    fn flags(&self, name: &str) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert-file".into(),
            self.str(&format!("{name}.pem")),
            "--tls-key-file".into(),
            self.str(&format!("{name}.key")),
        ]
    }
}

fn start(pki: &Pki, extra: &[&str]) -> Daemon {
    let flags = pki.flags("gw");
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    assert!(d.tls_addr.is_some(), "no TLS listener: {}", d.log_text());
    d
}

fn tls_addr(d: &Daemon) -> SocketAddr {
    d.tls_addr.expect("TLS listener")
}

/// A client that trusts only the CA in `ca` (PEM).
fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr` for `localhost`, trusting `ca`.
async fn tls_connect(addr: SocketAddr, ca: &Path) -> std::io::Result<TlsStream<TcpStream>> {
    let config = client_config(ca);
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(step(), TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// An HTTPS connection (the harness's raw HTTP client over TLS).
async fn https(addr: SocketAddr, ca: &Path) -> Http {
    let tls = tls_connect(addr, ca).await.expect("TLS handshake");
    Http::from_conn(Box::new(tls))
}

/// A device on `wss://localhost:PORT/ws?QUERY`, registered before it returns.
async fn wss_device(d: &Daemon, ca: &Path, query: &str) -> Device {
    let before = d.connections().await;
    let addr = tls_addr(d);
    let tls = tls_connect(addr, ca).await.expect("TLS handshake");
    let url = format!("wss://localhost:{}/ws?{query}", addr.port());
    let (ws, resp) = tokio::time::timeout(step(), tokio_tungstenite::client_async(url, tls))
        .await
        .expect("upgrade timed out")
        .expect("upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    let device = Device::from_ws(ws);
    wait_until(step(), "the TLS device is registered", || async {
        d.connections().await > before
    })
    .await;
    device
}

/// `POST path` with a JSON body and the bearer token.
fn post_auth(path: &str, body: &str, token: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn metrics(d: &Daemon) -> Value {
    d.get("/metrics").await.assert_json(200)
}

#[tokio::test]
async fn https_and_wss_serve_every_route_beside_plain_devices() {
    let pki = Pki::new("routes", 30);
    let ca = pki.path("ca.pem");
    let d = start(
        &pki,
        &["--api-token", "up-token", "--ws-secret", "dev-secret"],
    );
    let secret_query =
        |user: &str| format!("user_id={user}&token={}", device_token("dev-secret", user));

    // Devices on both ports at once.
    let mut tls_dev = wss_device(&d, &ca, &secret_query("tls_dev")).await;
    let mut plain_dev = Device::connect(&d, &secret_query("plain_dev")).await;
    wait_until(step(), "both devices registered", || async {
        d.connections().await == 2
    })
    .await;

    // A wss upgrade without the device token is refused like a plain one.
    let mut c = https(tls_addr(&d), &ca).await;
    c.send(b"GET /ws?user_id=x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
    c.read_response().await.assert_detail(401);

    // Push over https to each device; one keep-alive connection serves them all.
    let mut up = https(tls_addr(&d), &ca).await;
    for (user, dev) in [("tls_dev", &mut tls_dev), ("plain_dev", &mut plain_dev)] {
        let body = json!({"user_id": user, "data": {"n": user}}).to_string();
        up.send(&post_auth("/sse/push", &body, "up-token")).await;
        let r = up.read_response().await;
        assert_eq!(r.assert_json(200)["status"], "success", "{}", r.text());
        assert_eq!(dev.recv_json().await["n"], user);
    }
    // Without the token: 401, as on the plain port.
    up.send(&post(
        "/sse/push",
        &json!({"user_id": "tls_dev", "data": {}}).to_string(),
    ))
    .await;
    up.read_response().await.assert_detail(401);

    // A batch over https to both.
    let items = json!([
        {"user_id": "tls_dev", "data": {"b": 0}},
        {"user_id": "plain_dev", "data": {"b": 1}},
        {"user_id": "nobody", "data": {"b": 2}},
    ]);
    up.send(&post_auth(
        "/sse/push/batch",
        &items.to_string(),
        "up-token",
    ))
    .await;
    let results = up.read_response().await.assert_json(200)["results"].clone();
    let ok: Vec<bool> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["success"].as_bool().unwrap())
        .collect();
    assert_eq!(ok, [true, true, false], "{results}");
    assert_eq!(tls_dev.recv_json().await["b"], 0);
    assert_eq!(plain_dev.recv_json().await["b"], 1);

    // A send over https, answered by the TLS device, streamed back over TLS.
    let mut s = https(tls_addr(&d), &ca).await;
    let send = json!({"user_id": "tls_dev", "data": {"correlation_id": "c1", "q": 1}});
    s.send(&post_auth("/sse/send", &send.to_string(), "up-token"))
        .await;
    let mut stream = SseStream::open(s).await;
    let frame = tls_dev.recv_json().await;
    assert_eq!(frame["correlation_id"], "c1");
    tls_dev
        .send_text(r#"{"correlation_id":"c1","answer":1}"#)
        .await;
    tls_dev
        .send_text(r#"{"correlation_id":"c1","answer":2,"is_final":true}"#)
        .await;
    let first = stream.next_event(step()).await;
    assert!(first.data.contains(r#""answer":1"#), "{first:?}");
    let last = stream.next_event(step()).await;
    assert!(last.data.contains(r#""is_final":true"#), "{last:?}");

    // The same counters see both ports; the TLS ones count the handshakes.
    let m = metrics(&d).await;
    assert_eq!(m["active_connections"], 2);
    assert!(m["tls"]["handshakes"].as_u64().unwrap() >= 4, "{m}");
    assert_eq!(m["tls"]["certificate_subject"], "CN=localhost");
    let left = m["tls"]["certificate_expires_in_seconds"].as_i64().unwrap();
    assert!((29 * 86_400..=30 * 86_400).contains(&left), "{left}");

    // The same certificate in the Prometheus text, labelled with its subject: what an alert
    // on expiry reads.
    let prom = d.get("/metrics?format=prometheus").await;
    assert_eq!(prom.status, 200);
    let text = prom.text();
    assert!(
        text.contains("# TYPE wssed_tls_certificate_expiry_seconds gauge\n"),
        "{text}"
    );
    let gauge = |family: &str| -> i64 {
        let prefix = format!("{family}{{subject=\"CN=localhost\"}} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {text}"));
        line[prefix.len()..]
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let prom_left = gauge("wssed_tls_certificate_expiry_seconds");
    assert!(
        (29 * 86_400..=30 * 86_400).contains(&prom_left),
        "{prom_left}"
    );
    assert!(
        (left - 60..=left).contains(&prom_left),
        "{prom_left} vs {left}"
    );
    assert_eq!(
        gauge("wssed_tls_certificate_not_after_seconds"),
        m["tls"]["certificate_not_after"].as_i64().unwrap()
    );

    // The start log names the certificate served: subject, expiry date, days left, chain.
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("TLS certificate: "))
        .unwrap_or_else(|| panic!("no certificate line in {log}"));
    let (_, rest) = line.split_once("TLS certificate: ").unwrap();
    let rest = rest
        .strip_prefix("subject CN=localhost, expires ")
        .unwrap_or_else(|| panic!("{line}"));
    // "YYYY-MM-DD HH:MM:SS UTC (N days), chain of 1 (B bytes)"
    let (date, rest) = rest.split_at(23);
    assert!(
        date.ends_with(" UTC") && date.as_bytes()[4] == b'-' && date.as_bytes()[13] == b':',
        "{line}"
    );
    assert!(
        rest.starts_with(" (29 days), chain of 1 (")
            || rest.starts_with(" (30 days), chain of 1 ("),
        "{line}"
    );
    tls_dev.close().await;
    plain_dev.close().await;
}

#[tokio::test]
async fn curl_with_the_ca_file_pushes_over_https() {
    // README's upstream example, as written there.
    let pki = Pki::new("curl", 30);
    let d = start(&pki, &[]);
    let mut dev = wss_device(&d, &pki.path("ca.pem"), "user_id=dev1").await;
    let port = tls_addr(&d).port();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert", &pki.str("ca.pem")])
        .args(["-H", "Content-Type: application/json"])
        .arg(format!("https://localhost:{port}/sse/push"))
        .args(["-d", r#"{"user_id":"dev1","data":{"message":"hi"}}"#])
        .output()
        .expect("run curl (README's upstream example)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#""status":"success""#), "{text}");
    assert_eq!(dev.recv_json().await["message"], "hi");
    // Without the CA the client refuses the certificate, and the daemon counts it.
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("https://localhost:{port}/health"))
        .output()
        .expect("run curl");
    assert!(!out.status.success());
    wait_until(step(), "the rejected certificate is counted", || async {
        metrics(&d).await["tls"]["handshake_failures"]["certificate_rejected"] == 1
    })
    .await;
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_handshakes_while_old_sessions_go_on() {
    let first = Pki::new("reload-a", 30);
    let second = Pki::new("reload-b", 60);
    // The files the daemon reads, replaced in place as a renewal would.
    let live = Dir::new("reload-live");
    std::fs::copy(first.path("gw.pem"), live.path("cert.pem")).unwrap();
    std::fs::copy(first.path("gw.key"), live.path("key.pem")).unwrap();
    let d = Daemon::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert-file",
        &live.str("cert.pem"),
        "--tls-key-file",
        &live.str("key.pem"),
    ]);
    let addr = tls_addr(&d);
    let mut old_dev = wss_device(&d, &first.path("ca.pem"), "user_id=old").await;
    let mut old_http = https(addr, &first.path("ca.pem")).await;

    second.issue("renewed", "renewed.local", 60);
    std::fs::copy(second.path("renewed.pem"), live.path("cert.pem")).unwrap();
    std::fs::copy(second.path("renewed.key"), live.path("key.pem")).unwrap();
    d.signal("HUP");
    wait_until(step(), "the reload is logged", || async {
        d.log_text().contains("TLS certificate reloaded")
    })
    .await;
    // New handshakes get the new certificate: the new CA verifies it, the old one does not.
    assert!(tls_connect(addr, &second.path("ca.pem")).await.is_ok());
    assert!(tls_connect(addr, &first.path("ca.pem")).await.is_err());
    // What was open goes on: the device gets a push, the keep-alive connection serves.
    old_http
        .send(&post(
            "/sse/push",
            &json!({"user_id": "old", "data": {"after": "reload"}}).to_string(),
        ))
        .await;
    assert_eq!(
        old_http.read_response().await.assert_json(200)["status"],
        "success"
    );
    assert_eq!(old_dev.recv_json().await["after"], "reload");
    let m = metrics(&d).await;
    assert_eq!(m["tls"]["reloads"], 1);
    assert_eq!(m["tls"]["certificate_subject"], "CN=renewed.local");

    // A reload that fails keeps the certificate in use and says why in one line.
    std::fs::write(live.path("key.pem"), b"not a key").unwrap();
    d.signal("HUP");
    wait_until(step(), "the failed reload is logged", || async {
        d.log_text().contains("not reloaded")
    })
    .await;
    let line = d
        .log_text()
        .lines()
        .find(|l| l.contains("not reloaded"))
        .unwrap()
        .to_owned();
    assert!(line.contains("tls_key_file"), "{line}");
    assert!(tls_connect(addr, &second.path("ca.pem")).await.is_ok());
    assert_eq!(metrics(&d).await["tls"]["reload_failures"], 1);
    assert_eq!(d.health().await["status"], "healthy");
}

/// Runs the daemon with `args` expecting it to refuse to start: exit 2, stderr.
fn refused(args: &[&str]) -> String {
    let (status, _, err) = run_to_exit(args);
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    err
}

#[tokio::test]
async fn bad_certificate_files_at_start_exit_2_naming_the_setting() {
    let pki = Pki::new("bad", 30);
    let other = Pki::new("bad-other", 30);
    let cert = pki.str("gw.pem");
    let key = pki.str("gw.key");
    let tls = |c: &str, k: &str| -> Vec<String> {
        [
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert-file",
            c,
            "--tls-key-file",
            k,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let words = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    for (args, key_named, why) in [
        (
            tls(&pki.str("missing.pem"), &key),
            "tls_cert_file",
            "No such file",
        ),
        (
            tls(&cert, &pki.str("missing.key")),
            "tls_key_file",
            "No such file",
        ),
        // A folder cannot be read as a file (root reads a file whatever its mode).
        (tls(&pki.str(""), &key), "tls_cert_file", "cannot read"),
        (tls(&key, &key), "tls_cert_file", "no certificate"),
        (tls(&cert, &cert), "tls_key_file", "no private key"),
        (
            tls(&cert, &other.str("gw.key")),
            "tls_key_file",
            "does not match",
        ),
    ] {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = refused(&argv);
        let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}: one line, got {err}", words(&args));
        assert!(
            lines[0].contains(&format!("{key_named}: ")) && lines[0].contains(why),
            "{}: {err}",
            words(&args)
        );
    }
    // --check-config reads the files too.
    let (status, out, _) = run_to_exit(&[
        "--check-config",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ]);
    assert!(status.success());
    assert!(
        out.contains("# TLS certificate: subject CN=localhost"),
        "{out}"
    );

    // An expired certificate: a warning naming the setting, and the daemon serves it.
    let expired = Pki::new("expired", -1);
    let d = start(&expired, &[]);
    let log = d.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("expired"))
        .unwrap_or_else(|| panic!("no expiry warning in {log}"));
    assert!(
        warning.contains("WARN") && warning.contains("tls_cert_file"),
        "{warning}"
    );
    // The handshake completes up to the client's own check, which refuses it.
    let e = tls_connect(tls_addr(&d), &expired.path("ca.pem"))
        .await
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("expired"), "{e}");
    assert!(
        metrics(&d).await["tls"]["certificate_expires_in_seconds"]
            .as_i64()
            .unwrap()
            < 0
    );
}

#[tokio::test]
async fn tls_only_when_listen_is_off() {
    let pki = Pki::new("only", 30);
    let d = start(&pki, &["--listen", "off"]);
    assert_eq!(d.addr, tls_addr(&d), "no plain listener");
    wait_until(step(), "the log says the plain listener is off", || async {
        d.log_text().contains("plain listener off")
    })
    .await;
    let mut c = https(tls_addr(&d), &pki.path("ca.pem")).await;
    c.send(&get("/health")).await;
    assert_eq!(
        c.read_response().await.assert_json(200)["status"],
        "healthy"
    );
    // Nothing to listen on at all is a bad setting.
    let err = refused(&["--listen", "off"]);
    assert!(err.contains("listen: is off"), "{err}");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_plain_400_and_is_closed() {
    let pki = Pki::new("plain", 30);
    let d = start(&pki, &[]);
    let mut c = Http::connect(tls_addr(&d)).await;
    c.send(&get("/health")).await;
    let r = c.read_response().await;
    assert_eq!(
        r.assert_detail(400)["detail"],
        "Plain HTTP request sent to the TLS port"
    );
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_closed(step()).await;
    let m = metrics(&d).await;
    assert_eq!(m["tls"]["handshake_failures"]["plain_http"], 1, "{m}");
}

/// A raw TCP connection to the TLS port.
async fn raw(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(step(), TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap()
}

/// Reads until the daemon closes `s` (bytes it sent on the way), failing after `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("not closed within {within:?}; got {got:?}"),
        }
    }
}

/// The start of a ClientHello: a handshake record announcing 512 bytes, and 9 of them.
const HELLO_START: [u8; 14] = [
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xaa, 0xbb, 0xcc,
];

#[tokio::test]
async fn truncated_and_garbage_client_hellos_are_closed_and_counted() {
    let pki = Pki::new("hostile", 30);
    let d = start(&pki, &["--tls-handshake-timeout-secs", "1"]);
    let addr = tls_addr(&d);
    // Truncated, then the client leaves.
    let mut s = raw(addr).await;
    s.write_all(&HELLO_START).await.unwrap();
    s.shutdown().await.unwrap();
    read_until_closed(&mut s, step()).await;
    // Truncated, and the client waits: the handshake timeout ends it.
    let mut s = raw(addr).await;
    s.write_all(&HELLO_START).await.unwrap();
    read_until_closed(&mut s, t(5.0)).await;
    // A handshake record of garbage: closed at once.
    let mut s = raw(addr).await;
    let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    garbage.extend_from_slice(&[0x5a; 0x40]);
    s.write_all(&garbage).await.unwrap();
    read_until_closed(&mut s, step()).await;
    // Not TLS, not HTTP.
    let mut s = raw(addr).await;
    s.write_all(&[0x00, 0x01, 0x02]).await.unwrap();
    read_until_closed(&mut s, step()).await;
    wait_until(step(), "each failure counted by its reason", || async {
        let f = metrics(&d).await["tls"]["handshake_failures"].clone();
        f["closed"] == 1 && f["timeout"] == 1 && f["protocol"] == 1 && f["not_tls"] == 1
    })
    .await;
    // The listener still serves.
    assert!(tls_connect(addr, &pki.path("ca.pem")).await.is_ok());
}

#[tokio::test]
async fn slow_handshakes_time_out_while_real_clients_get_through() {
    let pki = Pki::new("slow", 30);
    let d = start(&pki, &["--tls-handshake-timeout-secs", "2"]);
    let addr = tls_addr(&d);
    // 50 silent clients and 50 that dribble a ClientHello one byte a second.
    let mut silent = Vec::new();
    let mut dribblers = Vec::new();
    for _ in 0..50 {
        silent.push(raw(addr).await);
        dribblers.push(raw(addr).await);
    }
    let started = Instant::now();
    let drip = tokio::spawn(async move {
        for (i, byte) in HELLO_START.iter().enumerate() {
            for s in &mut dribblers {
                let _ = s.write_all(&[*byte]).await;
            }
            if i + 1 < HELLO_START.len() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        dribblers
    });
    // Meanwhile a real client completes its handshake and is served.
    let mut c = https(addr, &pki.path("ca.pem")).await;
    c.send(&get("/health")).await;
    c.read_response().await.assert_json(200);
    for s in &mut silent {
        read_until_closed(s, t(6.0)).await;
    }
    let mut dribblers = drip.await.unwrap();
    for s in &mut dribblers {
        read_until_closed(s, t(6.0)).await;
    }
    // One deadline for the whole handshake, not one per byte.
    assert!(started.elapsed() < t(14.0), "{:?}", started.elapsed());
    wait_until(step(), "100 timeouts counted", || async {
        metrics(&d).await["tls"]["handshake_failures"]["timeout"] == 100
    })
    .await;
}

#[tokio::test]
async fn a_handshake_flood_past_the_connection_cap_gets_alerts_and_the_port_recovers() {
    let pki = Pki::new("flood", 30);
    // The cap: 1 + 1 + 256 = 258 open connections.
    let d = start(
        &pki,
        &[
            "--max-connections",
            "1",
            "--max-pending-sends",
            "1",
            "--tls-handshake-timeout-secs",
            "3",
        ],
    );
    let addr = tls_addr(&d);
    // Nothing else may connect meanwhile (a /metrics probe would be over the cap too); the
    // listener's queue is in order, so these are accepted before the ones past the cap.
    let mut held = Vec::new();
    for _ in 0..258 {
        held.push(raw(addr).await);
    }
    // Past the cap: a fatal alert at once, then close.
    let mut over = Vec::new();
    for _ in 0..20 {
        over.push(raw(addr).await);
    }
    for s in &mut over {
        let answer = read_until_closed(s, step()).await;
        assert_eq!(answer, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50]);
    }
    // The held ones time out; then the port serves again.
    for s in &mut held {
        read_until_closed(s, t(8.0)).await;
    }
    let m = metrics(&d).await;
    assert_eq!(m["connections_refused"], 20, "{m}");
    assert_eq!(m["tls"]["handshake_failures"]["timeout"], 258, "{m}");
    let mut c = https(addr, &pki.path("ca.pem")).await;
    c.send(&get("/health")).await;
    c.read_response().await.assert_json(200);
}

#[tokio::test]
async fn handshakes_are_paid_from_the_memory_budget() {
    let pki = Pki::new("budget", 30);
    // Room for one TLS connection (about 35 KiB) and its handshake, not for a second one.
    let d = start(&pki, &["--memory-budget-bytes", "60000"]);
    let addr = tls_addr(&d);
    let mut first = https(addr, &pki.path("ca.pem")).await;
    first.send(&get("/health")).await;
    first.read_response().await.assert_json(200);
    let used = metrics(&d).await["memory_used_bytes"].as_u64().unwrap();
    assert!(used > 30_000, "an open TLS connection is charged: {used}");
    // The second handshake does not fit: refused with an alert before it begins.
    let e = tls_connect(addr, &pki.path("ca.pem")).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("internal"), "{e}");
    let m = metrics(&d).await;
    assert_eq!(m["tls"]["handshake_failures"]["over_budget"], 1, "{m}");
    assert_eq!(m["memory_refused"]["tls"], 1, "{m}");
    // Once the first leaves, its charge comes back and a new handshake fits.
    drop(first);
    wait_until(step(), "the charge comes back", || async {
        metrics(&d).await["memory_used_bytes"].as_u64().unwrap() < 1000
    })
    .await;
    let mut again = https(addr, &pki.path("ca.pem")).await;
    again.send(&get("/health")).await;
    again.read_response().await.assert_json(200);
}

#[tokio::test]
async fn socket_activation_passes_the_tls_listener_by_name() {
    let pki = Pki::new("activated", 30);
    let bind = || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(64).unwrap();
        s.set_cloexec(false).unwrap();
        s
    };
    let (tls_sock, plain_sock) = (bind(), bind());
    let tls_at = tls_sock.local_addr().unwrap().as_socket().unwrap();
    let plain_at = plain_sock.local_addr().unwrap().as_socket().unwrap();
    let d = Daemon::start_activated_named(
        &[
            (tls_sock.as_raw_fd(), "tls"),
            (plain_sock.as_raw_fd(), "http"),
        ],
        &[
            "--tls-cert-file",
            &pki.str("gw.pem"),
            "--tls-key-file",
            &pki.str("gw.key"),
        ],
        &[],
    );
    assert_eq!(d.addr, plain_at);
    assert_eq!(d.tls_addr, Some(tls_at));
    let mut dev = wss_device(&d, &pki.path("ca.pem"), "user_id=act").await;
    let r = d
        .push(&json!({"user_id": "act", "data": {"via": "activation"}}))
        .await;
    assert_eq!(r.json()["status"], "success");
    assert_eq!(dev.recv_json().await["via"], "activation");
}

//! The TLS listener's side of a connection (README "TLS", docs/protocol.md §19): the
//! handshake, bounded in time and paid for from the memory budget before it begins; the
//! certificate in use, swapped on SIGHUP without touching open connections; and the stream
//! the rest of `net` reads and writes once the handshake is done.
//!
//! What rustls holds per connection is bounded by rustls itself (one record of at most
//! 16 KiB + 2 KiB in its read buffer, a 64 KiB handshake message at most, its received
//! plaintext, and what we let it buffer for sending, `TLS_WRITE_BUFFER_BYTES`). [`Metered`]
//! sits under rustls and charges the budget for it: a fixed part for the connection's life
//! (its state, its read buffer at rest, its send buffer), and, as record headers pass
//! through, what a burst of large records makes rustls hold until the plaintext is read.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;

use super::write_through::write_through;
use crate::hub::budget::{heap_bytes, Charge, Use};
use crate::hub::metrics::HandshakeFailure;
use crate::hub::{self, Hub};
use crate::ops::settings::{secs, Config};
use crate::ops::tls::{self as files, CertInfo, Loaded};

/// Plaintext bytes rustls may hold for sending before a write waits for the socket. Small, so
/// a device that stops reading pins little; records are then at most this long.
pub(crate) const TLS_WRITE_BUFFER_BYTES: usize = 4 * 1024;
/// What rustls reads per call into its record buffer, and that buffer's size at rest.
pub(crate) const TLS_READ_BYTES: usize = 4 * 1024;
/// A TLS connection's state besides its buffers: rustls's session (keys, state machine,
/// buffer headers) and tokio-rustls's. An idle TLS device measured 8.1 KiB more resident
/// memory than a plain one, its 4 KiB record buffer included (BENCHMARKS.md "TLS").
pub(crate) const TLS_STATE_BYTES: usize = 4 * 1024;
/// Records in flight up to this many bytes ride on a connection's fixed charge; a burst of
/// larger ones is charged as its headers arrive.
pub(crate) const TLS_SMALL_RECORDS_BYTES: usize = 4 * 1024;
/// What a handshake's server flight adds to the certificate chain: hello, extensions,
/// signature, finished, tickets.
pub(crate) const TLS_FLIGHT_BYTES: usize = 2 * 1024;
/// How long the alert to a connection refused before its handshake may take to be written.
pub(crate) const TLS_REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The first byte of a TLS handshake record (RFC 8446 §5.1, content type 22).
const HANDSHAKE_RECORD: u8 = 0x16;
/// A fatal `internal_error` alert in a plaintext record (RFC 8446 §6): what a connection
/// refused before its handshake is told.
const INTERNAL_ERROR_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

/// Bytes a connection is charged for its life once its handshake is done: state, its record
/// buffer at rest with small records in flight (twice the read size: rustls grows it by
/// doubling) and their plaintext, and its send buffer.
pub(crate) const fn session_bytes() -> usize {
    heap_bytes(TLS_STATE_BYTES)
        + heap_bytes(2 * (TLS_READ_BYTES + TLS_SMALL_RECORDS_BYTES))
        + heap_bytes(TLS_SMALL_RECORDS_BYTES)
        + heap_bytes(TLS_WRITE_BUFFER_BYTES + TLS_FLIGHT_BYTES)
}

/// Bytes a connection is charged while it handshakes: the session's, plus the server's
/// flight (the certificate chain of `chain_bytes` and the messages around it).
pub(crate) const fn handshake_bytes(chain_bytes: usize) -> usize {
    session_bytes() + heap_bytes(chain_bytes + TLS_FLIGHT_BYTES)
}

/// The certificate served to new handshakes; swapped on reload, while connections that
/// already finished their handshake keep the keys they agreed on.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = key;
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The TLS side of the daemon: the acceptor and the certificate it serves.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    /// Bytes of the chain served, for the handshake's charge.
    chain_bytes: std::sync::atomic::AtomicUsize,
    handshake_timeout: Duration,
}

impl Tls {
    /// TLS serving `loaded`, with `config`'s handshake timeout.
    pub(crate) fn new(config: &Config, loaded: Loaded) -> io::Result<Tls> {
        let current = Arc::new(Current(RwLock::new(loaded.key)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        // HTTP/1.1 is all wssed speaks; a client that offers ALPN without it is refused.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            current,
            chain_bytes: std::sync::atomic::AtomicUsize::new(loaded.info.chain_bytes),
            handshake_timeout: secs(config.tls_handshake_timeout_secs),
        })
    }

    /// Serves `loaded` to every handshake from now on.
    fn swap(&self, loaded: Loaded) {
        self.chain_bytes.store(
            loaded.info.chain_bytes,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.current.set(loaded.key);
    }

    /// Runs the handshake on an accepted connection (every way it fails is counted).
    pub(crate) async fn accept(&self, tcp: TcpStream, hub: &Hub) -> Handshake {
        let chain = self.chain_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let Ok(charge) = hub.budget.charge(handshake_bytes(chain), Use::Tls) else {
            hub.metrics.tls.failed(HandshakeFailure::OverBudget);
            refuse(tcp).await;
            return Handshake::Failed;
        };
        let deadline = Instant::now() + self.handshake_timeout;
        let mut shutdown = hub.shutdown.clone();
        let first = tokio::select! {
            r = timeout_at(deadline, first_byte(&tcp)) => r,
            () = hub::stopping(&mut shutdown) => return Handshake::Failed,
        };
        match first {
            Err(_) => return failed(hub, HandshakeFailure::Timeout),
            Ok(None) => return failed(hub, HandshakeFailure::Closed),
            Ok(Some(HANDSHAKE_RECORD)) => {}
            Ok(Some(b)) if b.is_ascii_uppercase() => {
                hub.metrics.tls.failed(HandshakeFailure::PlainHttp);
                return Handshake::PlainHttp(tcp);
            }
            Ok(Some(_)) => return failed(hub, HandshakeFailure::NotTls),
        }
        let metered = Metered::new(tcp, charge);
        let handshake = self.acceptor.accept_with(metered, |conn| {
            conn.set_buffer_limit(Some(TLS_WRITE_BUFFER_BYTES));
        });
        let done = tokio::select! {
            r = timeout_at(deadline, handshake) => r,
            () = hub::stopping(&mut shutdown) => return Handshake::Failed,
        };
        match done {
            Err(_) => failed(hub, HandshakeFailure::Timeout),
            Ok(Err(e)) => failed(hub, classify(&e)),
            Ok(Ok(mut stream)) => {
                hub.metrics.tls.handshakes.inc();
                stream.get_mut().0.established();
                Handshake::Done(Box::new(TlsSocket { inner: stream }))
            }
        }
    }

    /// Reloads the certificate and key on every SIGHUP until shutdown; a reload that fails
    /// keeps the certificate in use (one log line says why).
    pub(crate) async fn reload_on_hangup(
        self: Arc<Self>,
        mut hangups: tokio::signal::unix::Signal,
        hub: Arc<Hub>,
    ) {
        let mut shutdown = hub.shutdown.clone();
        loop {
            tokio::select! {
                got = hangups.recv() => if got.is_none() { return },
                () = hub::stopping(&mut shutdown) => return,
            }
            match files::load_configured(&hub.config) {
                Some(Ok(loaded)) => {
                    warn_if_expired(&loaded.info, "SIGHUP");
                    log::info!("SIGHUP: TLS certificate reloaded: {}", loaded.info);
                    hub.metrics.tls.serving(loaded.info.clone());
                    hub.metrics.tls.reloads.inc();
                    self.swap(loaded);
                }
                Some(Err(e)) => {
                    hub.metrics.tls.reload_failures.inc();
                    log::error!(
                        "SIGHUP: TLS certificate not reloaded, still serving the previous one: {e}"
                    );
                }
                None => log::warn!("SIGHUP: TLS is not configured, nothing to reload"),
            }
        }
    }
}

/// How a handshake ended.
pub(crate) enum Handshake {
    /// Done: the stream to serve HTTP on.
    Done(Box<TlsSocket>),
    /// A plain HTTP request came instead: the connection, its request unread, to answer
    /// with a plain 400 (docs/protocol.md §19.3).
    PlainHttp(TcpStream),
    /// Failed (counted by reason) or abandoned for shutdown: the connection is closed.
    Failed,
}

/// Counts a failed handshake; the connection ends.
fn failed(hub: &Hub, why: HandshakeFailure) -> Handshake {
    hub.metrics.tls.failed(why);
    log::debug!("TLS handshake failed: {}", why.label());
    Handshake::Failed
}

/// Logs a warning when `info`'s certificate has expired: clients will refuse it, but wssed
/// serves it (an operator renewing it should not find the gateway down).
pub(crate) fn warn_if_expired(info: &CertInfo, when: &str) {
    if info.expires_in_secs(files::unix_now()) <= 0 {
        log::warn!(
            "{when}: tls_cert_file: the certificate expired on {} ({}): clients will refuse it",
            files::utc_text(info.not_after),
            info.subject
        );
    }
}

/// Waits for the first byte without taking it; None when the peer closed first.
async fn first_byte(tcp: &TcpStream) -> Option<u8> {
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(1) => Some(byte[0]),
        _ => None,
    }
}

/// Refuses a connection before its handshake: a fatal alert, then close.
pub(crate) async fn refuse(mut tcp: TcpStream) {
    let _ = timeout(
        TLS_REFUSE_WRITE_TIMEOUT,
        tcp.write_all(&INTERNAL_ERROR_ALERT),
    )
    .await;
}

/// Why a handshake failed, from the error tokio-rustls returned.
fn classify(e: &io::Error) -> HandshakeFailure {
    use rustls::AlertDescription as A;
    let inner = e.get_ref();
    if inner.is_some_and(<dyn std::error::Error + Send + Sync>::is::<TlsOverBudget>) {
        return HandshakeFailure::OverBudget;
    }
    match inner.and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied,
        )) => HandshakeFailure::CertificateRejected,
        Some(rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol) => {
            HandshakeFailure::Incompatible
        }
        Some(
            rustls::Error::InvalidMessage(_)
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::DecryptError
            | rustls::Error::PeerSentOversizedRecord,
        ) => HandshakeFailure::Protocol,
        Some(_) => HandshakeFailure::Other,
        None => match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::WriteZero => HandshakeFailure::Closed,
            _ => HandshakeFailure::Other,
        },
    }
}

/// A TLS connection after its handshake: what [`Socket::Tls`] holds.
pub(crate) struct TlsSocket {
    inner: tokio_rustls::server::TlsStream<Metered>,
}

impl TlsSocket {
    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.inner.get_ref().0.tcp
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        // rustls reads more only once its plaintext is taken (wants_read): what a burst
        // of records made it hold is gone then, but for a record still arriving.
        let (metered, conn) = this.inner.get_mut();
        if conn.wants_read() {
            metered.drained();
        }
        r
    }
}

write_through!(TlsSocket, inner);

/// The error a read returns when the records a client sent do not fit the memory budget;
/// the connection ends.
#[derive(Debug)]
pub(crate) struct TlsOverBudget;

impl std::fmt::Display for TlsOverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS records do not fit the memory budget")
    }
}

impl std::error::Error for TlsOverBudget {}

/// The TCP socket under rustls, reading TLS record headers (RFC 8446 §5.1: type, version,
/// 16-bit length) as they pass, so that what rustls will hold is paid for before it reads it.
pub(crate) struct Metered {
    tcp: TcpStream,
    /// Pays for the connection's buffers.
    charge: Charge,
    /// The fixed part of the charge: the handshake's, then the session's.
    fixed: usize,
    /// Header bytes of the record being read (5 once complete).
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current record not read yet.
    left: usize,
    /// Bytes of the current record read so far (header included).
    current: usize,
    /// Record bytes handed to rustls since its plaintext was last taken: what its buffers
    /// may hold now, with `left` still to come.
    unread: usize,
}

impl Metered {
    fn new(tcp: TcpStream, charge: Charge) -> Metered {
        let fixed = charge.bytes();
        Metered {
            tcp,
            charge,
            fixed,
            header: [0; 5],
            header_len: 0,
            left: 0,
            current: 0,
            unread: 0,
        }
    }

    /// The handshake is done: the charge becomes the session's.
    fn established(&mut self) {
        self.fixed = session_bytes();
        let _ = self.pay();
    }

    /// rustls's plaintext was taken: only the record still arriving is held.
    fn drained(&mut self) {
        if self.unread != self.current {
            self.unread = self.current;
            let _ = self.pay();
        }
    }

    /// Follows `new` bytes through the record headers.
    fn saw(&mut self, mut new: &[u8]) {
        self.unread += new.len();
        while !new.is_empty() {
            if self.left > 0 {
                let n = self.left.min(new.len());
                self.left -= n;
                self.current += n;
                new = new.get(n..).unwrap_or_default();
                if self.left == 0 {
                    self.current = 0;
                }
                continue;
            }
            let n = (5 - self.header_len).min(new.len());
            if let (Some(dst), Some(src)) = (
                self.header.get_mut(self.header_len..self.header_len + n),
                new.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            self.header_len += n;
            self.current += n;
            new = new.get(n..).unwrap_or_default();
            if self.header_len == 5 {
                self.header_len = 0;
                self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                if self.left == 0 {
                    self.current = 0;
                }
            }
        }
    }

    /// Makes the charge follow what rustls may hold: the fixed part, and a burst of large
    /// records (their bytes in its buffer, which grows by doubling, and their plaintext).
    fn pay(&mut self) -> Result<(), TlsOverBudget> {
        let in_flight = self.unread + self.left;
        let wanted = if in_flight <= TLS_SMALL_RECORDS_BYTES {
            self.fixed
        } else {
            self.fixed + heap_bytes(3 * in_flight + 2 * TLS_READ_BYTES)
        };
        if wanted <= self.charge.bytes() {
            self.charge.shrink_to(wanted);
            return Ok(());
        }
        self.charge
            .grow_to(wanted, Use::Tls)
            .map_err(|_| TlsOverBudget)
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(buf.filled().get(before..).unwrap_or_default());
                match this.pay() {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(e) => Poll::Ready(Err(io::Error::other(e))),
                }
            }
            other => other,
        }
    }
}

write_through!(Metered, tcp);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::budget::Budget;

    fn budget(limit: usize) -> &'static Budget {
        let b: &'static Budget = Box::leak(Box::new(Budget::new()));
        b.set_limit(limit);
        b
    }

    fn header(len: u16) -> [u8; 5] {
        let [hi, lo] = len.to_be_bytes();
        [0x17, 0x03, 0x03, hi, lo]
    }

    /// A Metered over a real (idle) TCP socket, charged `fixed` bytes from `b`.
    async fn metered(b: &'static Budget, fixed: usize) -> (Metered, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let tcp = TcpStream::from_std(server).unwrap();
        (
            Metered::new(tcp, b.charge(fixed, Use::Tls).unwrap()),
            client,
        )
    }

    #[tokio::test]
    async fn small_records_ride_on_the_fixed_charge() {
        let b = budget(1 << 20);
        let (mut m, _c) = metered(b, 1000).await;
        for _ in 0..10 {
            m.saw(&header(100));
            m.saw(&[0; 100]);
            m.pay().unwrap();
            assert_eq!(b.used(), 1000);
            m.drained();
        }
        assert_eq!((m.left, m.current, m.unread), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_large_record_is_charged_from_its_header_until_its_plaintext_is_taken() {
        let b = budget(1 << 20);
        let (mut m, _c) = metered(b, 1000).await;
        // The header alone announces 16 KiB: charged before the body arrives.
        m.saw(&header(16_384));
        m.pay().unwrap();
        let charged = b.used();
        assert!(charged >= 1000 + 3 * 16_384, "{charged}");
        // Split anywhere, the same record costs the same.
        m.saw(&[0; 10_000]);
        m.pay().unwrap();
        assert_eq!(b.used(), charged);
        m.drained();
        assert_eq!(b.used(), charged, "still arriving: still held");
        m.saw(&[0; 6_384]);
        m.pay().unwrap();
        m.drained();
        assert_eq!(b.used(), 1000, "plaintext taken: back to the fixed charge");
    }

    #[tokio::test]
    async fn records_that_yield_no_plaintext_add_up() {
        // A handshake message joined from many records stays in rustls's buffer.
        let b = budget(1 << 20);
        let (mut m, _c) = metered(b, 0).await;
        for _ in 0..8 {
            m.saw(&header(4_000));
            m.saw(&[0; 4_000]);
            m.pay().unwrap();
        }
        assert!(b.used() >= 3 * 8 * 4_005, "{}", b.used());
    }

    #[tokio::test]
    async fn a_burst_over_the_budget_is_refused() {
        let b = budget(20_000);
        let (mut m, _c) = metered(b, 1000).await;
        m.saw(&header(16_384));
        assert!(m.pay().is_err());
        assert_eq!(b.used(), 1000, "a refused growth keeps what was held");
        assert_eq!(b.refused(Use::Tls), 1);
    }

    /// A key that signs nothing: the lock test only tells served chains apart.
    #[derive(Debug)]
    struct NoSigner;

    impl rustls::sign::SigningKey for NoSigner {
        fn choose_scheme(
            &self,
            _: &[rustls::SignatureScheme],
        ) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }

        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ECDSA
        }
    }

    fn key(der: &[u8]) -> Arc<CertifiedKey> {
        let chain = vec![rustls::pki_types::CertificateDer::from(der.to_vec())];
        Arc::new(CertifiedKey::new(chain, Arc::new(NoSigner)))
    }

    /// Panics unwind (Cargo.toml): a panic while the served certificate is write-locked
    /// poisons it, and handshakes must go on getting it, and a reload on replacing it.
    #[test]
    fn a_panic_inside_the_certificate_lock_leaves_it_served_and_swappable() {
        let current = Arc::new(Current(RwLock::new(key(b"old"))));
        let poisoner = Arc::clone(&current);
        let died = std::thread::spawn(move || {
            let _guard = poisoner.0.write();
            panic!("a bug inside a critical section");
        })
        .join();
        assert!(died.is_err());
        assert!(current.0.is_poisoned());
        assert_eq!(current.get().cert[0].as_ref(), b"old");
        current.set(key(b"new"));
        assert_eq!(current.get().cert[0].as_ref(), b"new");
    }
}

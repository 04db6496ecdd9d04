//! The service manager's side channels: the notify protocol (`READY=1`, `WATCHDOG=1`, ...),
//! the watchdog interval, and socket activation (docs/protocol.md §12).
//!
//! Everything that reads the environment is a thin shell around a pure function that takes
//! the values, so the parsing is tested without touching the process environment.

use std::ffi::OsStr;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The first descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Why the environment yields no notify target, watchdog or activation socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvError {
    /// The variable is not set (not started by systemd, or the feature is off).
    Unset,
    /// The variable is set but is not what the protocol allows.
    Malformed,
    /// The variable is meant for another process (`*_PID` is not ours).
    OtherProcess,
    /// A well-formed value this build cannot use (e.g. a `vsock:` notify address).
    Unsupported,
}

/// Why an inherited descriptor is not adopted as the listening socket.
#[derive(Debug)]
pub enum AdoptError {
    /// The descriptor is not a listening IPv4/IPv6 stream socket.
    NotTcpListener,
    /// A socket option query or change failed.
    Io(io::Error),
}

impl From<io::Error> for AdoptError {
    fn from(e: io::Error) -> Self {
        AdoptError::Io(e)
    }
}

/// Where `NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// A socket file (`/run/systemd/notify`).
    Path(std::path::PathBuf),
    /// A Linux abstract socket name (`@name`, without the `@`).
    Abstract(Vec<u8>),
}

/// Parses `NOTIFY_SOCKET`: an absolute path or `@name` (abstract namespace).
pub fn parse_notify_socket(value: &OsStr) -> Result<NotifyAddr, EnvError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(EnvError::Unset);
    }
    if bytes.starts_with(b"/") {
        return Ok(NotifyAddr::Path(std::path::PathBuf::from(value)));
    }
    if let Some(name) = bytes.strip_prefix(b"@") {
        if name.is_empty() {
            return Err(EnvError::Malformed);
        }
        return Ok(NotifyAddr::Abstract(name.to_vec()));
    }
    // systemd also speaks AF_VSOCK (`vsock:CID:PORT`), for VMs; not a gateway's case.
    if bytes.starts_with(b"vsock") {
        return Err(EnvError::Unsupported);
    }
    Err(EnvError::Malformed)
}

/// Parses a decimal pid as the `*_PID` variables carry it.
fn parse_pid(value: &str) -> Result<u32, EnvError> {
    match value.trim().parse::<u32>() {
        Ok(0) | Err(_) => Err(EnvError::Malformed),
        Ok(pid) => Ok(pid),
    }
}

/// The interval between `WATCHDOG=1` pings: half of `WATCHDOG_USEC`, as systemd advises,
/// when `WATCHDOG_PID` is unset or names `our_pid`.
pub fn watchdog_interval_from(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    our_pid: u32,
) -> Result<Duration, EnvError> {
    let usec = watchdog_usec.ok_or(EnvError::Unset)?;
    let usec = match usec.trim().parse::<u64>() {
        Ok(0) | Err(_) => return Err(EnvError::Malformed),
        Ok(n) => n,
    };
    if let Some(pid) = watchdog_pid {
        if parse_pid(pid)? != our_pid {
            return Err(EnvError::OtherProcess);
        }
    }
    Ok(Duration::from_micros(usec / 2))
}

/// The number of descriptors passed by socket activation (from fd 3 on), when
/// `LISTEN_PID` names `our_pid` and `LISTEN_FDS` is at least 1.
pub fn listen_fd_count_from(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    our_pid: u32,
) -> Result<u32, EnvError> {
    let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Err(EnvError::Unset);
    };
    if parse_pid(pid)? != our_pid {
        return Err(EnvError::OtherProcess);
    }
    match fds.trim().parse::<u32>() {
        Ok(0) => Err(EnvError::Unset),
        Ok(n) => Ok(n),
        Err(_) => Err(EnvError::Malformed),
    }
}

fn env_str(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Connection to the service manager's notify socket (`NOTIFY_SOCKET`: a path, or `@name` abstract).
#[derive(Debug)]
pub struct Notifier {
    /// An unbound datagram socket and the manager's address; `None` when inert.
    link: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; inert when `NOTIFY_SOCKET` is unset.
    pub fn from_env() -> Notifier {
        Notifier::from_values(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            env_str("WATCHDOG_USEC").as_deref(),
            env_str("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// A notifier that sends nothing (not run by systemd).
    pub fn inert() -> Notifier {
        Notifier {
            link: None,
            watchdog: None,
        }
    }

    fn from_values(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        our_pid: u32,
    ) -> Notifier {
        let addr = match notify_socket.map(parse_notify_socket) {
            None | Some(Err(EnvError::Unset)) => return Notifier::inert(),
            Some(Err(e)) => {
                log::warn!(
                    "NOTIFY_SOCKET not usable ({e:?}): not reporting to the service manager"
                );
                return Notifier::inert();
            }
            Some(Ok(addr)) => addr,
        };
        let link = match connect(&addr) {
            Ok(link) => link,
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {addr:?}: {e}: not reporting to the service manager");
                return Notifier::inert();
            }
        };
        let watchdog = match watchdog_interval_from(watchdog_usec, watchdog_pid, our_pid) {
            Ok(interval) => Some(interval),
            Err(EnvError::Unset | EnvError::OtherProcess) => None,
            Err(e) => {
                log::warn!("WATCHDOG_USEC/WATCHDOG_PID not usable ({e:?}): no watchdog pings");
                None
            }
        };
        Notifier {
            link: Some(link),
            watchdog,
        }
    }

    /// True when there is a notify socket to report to.
    pub fn is_active(&self) -> bool {
        self.link.is_some()
    }

    /// Sends `state` (`READY=1`, `STATUS=...`, newline-separated assignments) as one datagram;
    /// errors are logged at debug, never fatal.
    pub fn notify(&self, state: &str) {
        let Some((socket, addr)) = &self.link else {
            return;
        };
        // Non-blocking: a manager that stopped reading must not stall the event loop.
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            log::debug!("sd_notify {state:?}: {e}");
        }
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the watchdog is on for
    /// this process (`WATCHDOG_PID` unset or ours) and there is a notify socket.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }
}

fn connect(addr: &NotifyAddr) -> io::Result<(UnixDatagram, SocketAddr)> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let addr = match addr {
        NotifyAddr::Path(path) => SocketAddr::from_pathname(path)?,
        NotifyAddr::Abstract(name) => abstract_addr(name)?,
    };
    Ok((socket, addr))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Set once the passed descriptors have been taken, so a second call cannot make a second
/// owner of them.
static LISTEN_FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// The `FileDescriptorName=` that marks a passed socket as the TLS listener.
pub const TLS_FD_NAME: &str = "tls";

/// The listening sockets passed by socket activation.
#[derive(Debug, Default)]
pub struct Passed {
    /// The plain listener: the first socket not named [`TLS_FD_NAME`].
    pub plain: Option<TcpListener>,
    /// The TLS listener: the first socket named [`TLS_FD_NAME`].
    pub tls: Option<TcpListener>,
}

/// Which of `count` passed descriptors (0-based, from fd 3) is which: the first named
/// `tls` in `LISTEN_FDNAMES` (colon separated) is the TLS listener, the first other one the
/// plain listener; the rest are returned to be ignored.
pub fn assign_fds(count: u32, names: Option<&str>) -> (Option<u32>, Option<u32>, Vec<u32>) {
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    let (mut plain, mut tls, mut rest) = (None, None, Vec::new());
    for i in 0..count {
        let name = names.get(i as usize).copied().unwrap_or("");
        let slot = if name == TLS_FD_NAME {
            &mut tls
        } else {
            &mut plain
        };
        if slot.is_none() {
            *slot = Some(i);
        } else {
            rest.push(i);
        }
    }
    (plain, tls, rest)
}

/// The listening sockets passed by socket activation (`LISTEN_PID` == our pid,
/// `LISTEN_FDS` >= 1, named by `LISTEN_FDNAMES`), set non-blocking and close-on-exec. Only
/// the first call can return them.
pub fn listen_sockets() -> Passed {
    let count = match listen_fd_count_from(
        env_str("LISTEN_PID").as_deref(),
        env_str("LISTEN_FDS").as_deref(),
        std::process::id(),
    ) {
        Ok(n) => n,
        Err(EnvError::Unset | EnvError::OtherProcess) => return Passed::default(),
        Err(e) => {
            log::warn!(
                "LISTEN_PID/LISTEN_FDS not usable ({e:?}): binding the configured addresses"
            );
            return Passed::default();
        }
    };
    if LISTEN_FD_TAKEN.swap(true, Ordering::SeqCst) {
        return Passed::default();
    }
    let (plain, tls, rest) = assign_fds(count, env_str("LISTEN_FDNAMES").as_deref());
    if !rest.is_empty() {
        let fds: Vec<String> = rest
            .iter()
            .map(|i| (LISTEN_FDS_START + *i as RawFd).to_string())
            .collect();
        log::warn!(
            "socket activation passed {count} sockets: ignoring fd {} (one plain and one named `{TLS_FD_NAME}` are used)",
            fds.join(", ")
        );
    }
    Passed {
        plain: plain.and_then(take_passed),
        tls: tls.and_then(take_passed),
    }
}

/// Adopts passed descriptor number `index` (fd 3 + index) as a listener.
fn take_passed(index: u32) -> Option<TcpListener> {
    let fd = LISTEN_FDS_START + RawFd::try_from(index).ok()?;
    #[allow(unsafe_code)]
    // SAFETY: LISTEN_PID names this process, so the service manager passed it open
    // descriptors 3..3+LISTEN_FDS to own. While they stay open no open() can be given their
    // numbers, so nothing else in the process refers to them; LISTEN_FD_TAKEN makes
    // listen_sockets() run once, and assign_fds() hands out each index at most once, so this
    // is the only place that ever takes ownership of this one.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match adopt_listener(owned) {
        Ok(listener) => Some(listener),
        Err(e) => {
            log::warn!(
                "socket activation fd {fd} not usable ({e:?}): binding the configured address"
            );
            None
        }
    }
}

/// Takes an inherited descriptor as the TCP listener, after checking it is one.
pub fn adopt_listener(fd: OwnedFd) -> Result<TcpListener, AdoptError> {
    let socket = socket2::Socket::from(fd);
    if socket.r#type()? != socket2::Type::STREAM {
        return Err(AdoptError::NotTcpListener);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let domain = socket.domain()?;
        if domain != socket2::Domain::IPV4 && domain != socket2::Domain::IPV6 {
            return Err(AdoptError::NotTcpListener);
        }
        if !socket.is_listener()? {
            return Err(AdoptError::NotTcpListener);
        }
    }
    // Passed descriptors arrive without FD_CLOEXEC; tokio needs non-blocking.
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicU32;

    static UNIQUE: AtomicU32 = AtomicU32::new(0);

    fn unique_name(kind: &str) -> String {
        format!(
            "wssed-test-{kind}-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn recv_text(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A socket file removed when the test ends, pass or fail.
    struct TempSocket(PathBuf);
    impl Drop for TempSocket {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn notify_socket_path_and_abstract() {
        assert_eq!(
            parse_notify_socket(OsStr::new("/run/systemd/notify")),
            Ok(NotifyAddr::Path(PathBuf::from("/run/systemd/notify")))
        );
        assert_eq!(
            parse_notify_socket(OsStr::new("@/org/freedesktop/systemd1/notify/42")),
            Ok(NotifyAddr::Abstract(
                b"/org/freedesktop/systemd1/notify/42".to_vec()
            ))
        );
    }

    #[test]
    fn notify_socket_rejects_empty_relative_and_vsock() {
        assert_eq!(parse_notify_socket(OsStr::new("")), Err(EnvError::Unset));
        assert_eq!(
            parse_notify_socket(OsStr::new("@")),
            Err(EnvError::Malformed)
        );
        assert_eq!(
            parse_notify_socket(OsStr::new("run/notify")),
            Err(EnvError::Malformed)
        );
        assert_eq!(
            parse_notify_socket(OsStr::new("vsock:2:1234")),
            Err(EnvError::Unsupported)
        );
    }

    #[test]
    fn watchdog_is_half_the_usec() {
        assert_eq!(
            watchdog_interval_from(Some("10000000"), None, 7),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval_from(Some("3"), Some("7"), 7),
            Ok(Duration::from_micros(1))
        );
    }

    #[test]
    fn watchdog_off_when_unset_zero_malformed_or_for_another_pid() {
        assert_eq!(watchdog_interval_from(None, None, 7), Err(EnvError::Unset));
        assert_eq!(
            watchdog_interval_from(Some("0"), None, 7),
            Err(EnvError::Malformed)
        );
        assert_eq!(
            watchdog_interval_from(Some("5s"), None, 7),
            Err(EnvError::Malformed)
        );
        assert_eq!(
            watchdog_interval_from(Some("1000"), Some("8"), 7),
            Err(EnvError::OtherProcess)
        );
        assert_eq!(
            watchdog_interval_from(Some("1000"), Some("x"), 7),
            Err(EnvError::Malformed)
        );
    }

    #[test]
    fn listen_fds_for_us() {
        assert_eq!(listen_fd_count_from(Some("7"), Some("1"), 7), Ok(1));
        assert_eq!(listen_fd_count_from(Some("7"), Some("3"), 7), Ok(3));
    }

    #[test]
    fn listen_fds_not_for_us() {
        assert_eq!(listen_fd_count_from(None, None, 7), Err(EnvError::Unset));
        assert_eq!(
            listen_fd_count_from(Some("7"), None, 7),
            Err(EnvError::Unset)
        );
        assert_eq!(
            listen_fd_count_from(None, Some("1"), 7),
            Err(EnvError::Unset)
        );
        assert_eq!(
            listen_fd_count_from(Some("8"), Some("1"), 7),
            Err(EnvError::OtherProcess)
        );
        assert_eq!(
            listen_fd_count_from(Some("7"), Some("0"), 7),
            Err(EnvError::Unset)
        );
        assert_eq!(
            listen_fd_count_from(Some("7"), Some("-1"), 7),
            Err(EnvError::Malformed)
        );
        assert_eq!(
            listen_fd_count_from(Some("0"), Some("1"), 7),
            Err(EnvError::Malformed)
        );
    }

    #[test]
    fn passed_sockets_are_told_apart_by_name() {
        assert_eq!(assign_fds(1, None), (Some(0), None, vec![]));
        assert_eq!(assign_fds(1, Some("wssed.socket")), (Some(0), None, vec![]));
        assert_eq!(assign_fds(2, Some("tls:http")), (Some(1), Some(0), vec![]));
        assert_eq!(assign_fds(2, Some("http:tls")), (Some(0), Some(1), vec![]));
        assert_eq!(assign_fds(1, Some("tls")), (None, Some(0), vec![]));
        assert_eq!(assign_fds(3, Some("a:b:tls")), (Some(0), Some(2), vec![1]));
        // Fewer names than descriptors: the unnamed ones are plain.
        assert_eq!(assign_fds(2, Some("tls")), (Some(1), Some(0), vec![]));
    }

    #[test]
    fn notifier_sends_to_a_path_socket() {
        let path = std::env::temp_dir().join(unique_name("path"));
        let manager = UnixDatagram::bind(&path).expect("bind");
        let _cleanup = TempSocket(path.clone());
        let n = Notifier::from_values(Some(path.as_os_str()), Some("4000000"), None, 1);
        assert!(n.is_active());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(2)));
        n.notify("READY=1\nSTATUS=0 devices");
        assert_eq!(recv_text(&manager), "READY=1\nSTATUS=0 devices");
        n.notify("WATCHDOG=1");
        assert_eq!(recv_text(&manager), "WATCHDOG=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifier_sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = unique_name("abstract");
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let manager = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        let env = format!("@{name}");
        let n = Notifier::from_values(Some(OsStr::new(&env)), None, None, 1);
        assert!(n.is_active());
        assert_eq!(n.watchdog_interval(), None);
        n.notify("STOPPING=1");
        assert_eq!(recv_text(&manager), "STOPPING=1");
    }

    #[test]
    fn notifier_inert_without_socket_and_no_watchdog_for_other_pid() {
        let n = Notifier::from_values(None, Some("4000000"), None, 1);
        assert!(!n.is_active());
        assert_eq!(n.watchdog_interval(), None);
        n.notify("READY=1");

        let path = std::env::temp_dir().join(unique_name("pid"));
        let _manager = UnixDatagram::bind(&path).expect("bind");
        let _cleanup = TempSocket(path.clone());
        let n = Notifier::from_values(Some(path.as_os_str()), Some("4000000"), Some("2"), 1);
        assert!(n.is_active());
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn notify_to_a_vanished_manager_is_not_fatal() {
        let path = std::env::temp_dir().join(unique_name("gone"));
        let n = Notifier::from_values(Some(path.as_os_str()), None, None, 1);
        assert!(n.is_active());
        n.notify("READY=1");
        n.notify("READY=1");
    }

    #[test]
    fn adopts_a_listening_tcp_socket() {
        let std_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("addr");
        let listener = adopt_listener(OwnedFd::from(std_listener)).expect("adopted");
        assert_eq!(listener.local_addr().expect("addr"), addr);
        // Non-blocking, as tokio needs: no pending connection is WouldBlock, not a hang.
        let err = listener.accept().expect_err("nothing to accept");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let _client = std::net::TcpStream::connect(addr).expect("connect");
    }

    #[test]
    fn refuses_udp_unbound_tcp_and_unix_sockets() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        assert!(matches!(
            adopt_listener(OwnedFd::from(udp)),
            Err(AdoptError::NotTcpListener)
        ));
        let tcp =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("tcp");
        assert!(matches!(
            adopt_listener(OwnedFd::from(tcp)),
            Err(AdoptError::NotTcpListener)
        ));
        let path = std::env::temp_dir().join(unique_name("unix"));
        let unix = std::os::unix::net::UnixListener::bind(&path).expect("unix");
        let _cleanup = TempSocket(path);
        assert!(matches!(
            adopt_listener(OwnedFd::from(unix)),
            Err(AdoptError::NotTcpListener)
        ));
    }
}

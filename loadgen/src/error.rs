//! The load tool's error type: every failure names its phase, so a JSON line can say what broke.

use std::fmt;

/// Why a scenario (or one of its connections) failed.
#[derive(Debug)]
pub enum LgError {
    /// A command-line problem: the flag and what is wrong with it.
    Args(String),
    /// The target address is not on the loopback range; this tool only talks to 127.0.0.0/8.
    NotLoopback(String),
    /// A socket call failed.
    Io(std::io::Error),
    /// The WebSocket client failed (handshake or frame).
    Ws(tokio_tungstenite::tungstenite::Error),
    /// The peer closed a connection while an answer was expected.
    Closed,
    /// An HTTP answer could not be parsed.
    BadResponse(&'static str),
    /// An HTTP answer exceeded the response buffer bound.
    ResponseTooLarge,
    /// A bounded wait ran out; the phase is named.
    Timeout(&'static str),
    /// Reading `/proc` for the server failed (pid, file).
    Proc(u32, &'static str),
    /// Not enough file descriptors for the requested connections (needed, soft limit).
    FdLimit(u64, u64),
}

impl fmt::Display for LgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Args(m) => write!(f, "bad arguments: {m}"),
            Self::NotLoopback(a) => write!(f, "refusing non-loopback target {a}"),
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::Ws(e) => write!(f, "websocket: {e}"),
            Self::Closed => write!(f, "peer closed the connection"),
            Self::BadResponse(w) => write!(f, "bad HTTP response: {w}"),
            Self::ResponseTooLarge => write!(f, "HTTP response over the buffer bound"),
            Self::Timeout(w) => write!(f, "timed out: {w}"),
            Self::Proc(pid, file) => write!(f, "cannot read /proc/{pid}/{file}"),
            Self::FdLimit(need, have) => write!(
                f,
                "need about {need} file descriptors, soft limit is {have} (raise ulimit -n)"
            ),
        }
    }
}

impl std::error::Error for LgError {}

impl From<std::io::Error> for LgError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for LgError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::Ws(e)
    }
}

//! A device's socket with the frame checks tungstenite does not make (`wire::frames`) on
//! everything read from it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::wire::frames::{FrameWatch, Violation};

/// The error a read returns once the device broke a framing rule; `session` closes with 1002.
#[derive(Debug)]
pub(crate) struct FramingViolation(pub(crate) Violation);

impl std::fmt::Display for FramingViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "frame violates RFC 6455 §5.2: {:?}", self.0)
    }
}

impl std::error::Error for FramingViolation {}

/// A device's TCP stream whose incoming bytes pass through a [`FrameWatch`].
pub(crate) struct Watched {
    stream: TcpStream,
    watch: FrameWatch,
}

impl Watched {
    /// Watches `stream`, whose frames start with `leftover` (bytes read past the upgrade).
    /// Err when those bytes already break a rule.
    pub(crate) fn new(stream: TcpStream, leftover: &[u8]) -> (Watched, Result<(), Violation>) {
        let mut watch = FrameWatch::default();
        let early = watch.feed(leftover);
        (Watched { stream, watch }, early)
    }
}

impl Watched {
    /// Makes the coming close a TCP reset (`SO_LINGER` 0): no unsent data is kept.
    pub(crate) fn reset_on_close(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.stream).set_linger(Some(std::time::Duration::ZERO))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                match this.watch.feed(new) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(v) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        FramingViolation(v),
                    ))),
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

//! A device's socket with the frame checks tungstenite does not make (`wire::frames`) on
//! everything read from it, and the memory budget's charge for the message being received:
//! tungstenite buffers a whole frame (and assembles a fragmented message) once it has read a
//! header, so the bytes a header announces are paid for as that header passes through here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::socket::Socket;
use super::write_through::write_through;
use crate::hub::budget::{heap_bytes, Budget, Charge, Use};
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

/// The error a read returns when the message a device started does not fit the memory
/// budget; `session` closes with 1013.
#[derive(Debug)]
pub(crate) struct InboundOverBudget;

impl std::fmt::Display for InboundOverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the device's message does not fit the memory budget")
    }
}

impl std::error::Error for InboundOverBudget {}

/// Messages up to this size ride on the session's own charge (`session::SESSION_BYTES`
/// counts tungstenite's read buffer); larger ones are paid for as they are announced.
pub(crate) const UNCHARGED_MESSAGE_BYTES: u64 = 512;

/// A device's stream whose incoming bytes pass through a [`FrameWatch`].
pub(crate) struct Watched {
    stream: Socket,
    watch: FrameWatch,
    /// Pays for the message being received.
    charge: Charge,
    /// `max_message_bytes`: a larger frame is tungstenite's to refuse (1009), not ours.
    max_message_bytes: u64,
    /// The message announced does not fit the budget: the next read fails.
    over_budget: bool,
}

impl Watched {
    /// Watches `stream`, whose frames start with `leftover` (bytes read past the upgrade),
    /// paying for large messages from `budget`. Err when those bytes already break a rule.
    pub(crate) fn new(
        stream: Socket,
        leftover: &[u8],
        budget: &'static Budget,
        max_message_bytes: usize,
    ) -> (Watched, Result<(), Violation>) {
        let mut watch = FrameWatch::default();
        let early = watch.feed(leftover);
        let mut watched = Watched {
            stream,
            watch,
            charge: budget.empty(),
            max_message_bytes: max_message_bytes as u64,
            over_budget: false,
        };
        watched.over_budget = watched.pay_for_message().is_err();
        (watched, early)
    }

    /// Makes the charge follow the message being received: what tungstenite holds for it is
    /// its frame buffer, grown to the frame (and doubled on the way), plus the assembled
    /// message when it comes in fragments.
    fn pay_for_message(&mut self) -> Result<(), ()> {
        let announced = self.watch.message_bytes();
        let wanted = if announced <= UNCHARGED_MESSAGE_BYTES || announced > self.max_message_bytes {
            0
        } else {
            let held = if self.watch.fragmented() { 4 } else { 2 };
            heap_bytes(
                usize::try_from(announced)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(held),
            )
        };
        if wanted <= self.charge_bytes() {
            self.charge.shrink_to(wanted);
            return Ok(());
        }
        self.charge.grow_to(wanted, Use::Inbound).map_err(|_| ())
    }

    fn charge_bytes(&self) -> usize {
        self.charge.bytes()
    }
}

impl Watched {
    /// Makes the coming close a TCP reset (`SO_LINGER` 0): no unsent data is kept.
    pub(crate) fn reset_on_close(&self) -> io::Result<()> {
        socket2::SockRef::from(self.stream.tcp()).set_linger(Some(std::time::Duration::ZERO))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.over_budget {
            return Poll::Ready(Err(io::Error::other(InboundOverBudget)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                if let Err(v) = this.watch.feed(new) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        FramingViolation(v),
                    )));
                }
                // A header that announces more than the budget holds ends the session
                // before tungstenite buffers the frame.
                if this.pay_for_message().is_err() {
                    this.over_budget = true;
                    return Poll::Ready(Err(io::Error::other(InboundOverBudget)));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

write_through!(Watched, stream);

//! One upstream connection's socket and buffers, with the bounded reads and writes every
//! HTTP answer goes through (the request loop's and the SSE stream's alike).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

use super::socket::Socket;
use crate::app::error::ApiError;
use crate::app::push;
use crate::hub::budget::{Budget, Charge, OverBudget, Use};
use crate::hub::{self, Hub};
use crate::wire::http::response::{self, Persist};
use crate::wire::upgrade::Upgrade;

/// Read buffer allocated per connection, and the most one read takes.
pub(crate) const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Response buffer allocated per connection. An answer that outgrows it is paid for from the
/// memory budget while it is written, and the larger buffer is freed after.
pub(crate) const WRITE_BUFFER_BYTES: usize = 1024;

/// Longest time a connection closed after an error answer keeps reading (and dropping)
/// what the client still sends, so that the client can read the answer (RFC 9112 §9.6).
pub(crate) const LINGER_SECS: u64 = 2;
/// Most bytes dropped that way before the connection closes regardless.
pub(crate) const LINGER_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of pipelined requests buffered while a send stream is open; past it the stream
/// stops reading (and so stops noticing EOF until the next keepalive write fails).
pub(crate) const MAX_PIPELINED_BYTES: usize = 16 * 1024;

/// Writes all of `bytes` and flushes: over TLS a write may leave bytes in the session's
/// buffer, and an answer counts as written only once it is on the socket (a no-op over TCP).
pub(crate) async fn write_out(stream: &mut Socket, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// What the connection does after a request.
pub(crate) enum Next {
    /// Serve the next request.
    KeepAlive,
    /// Close.
    Close,
    /// Hand the socket to a device session.
    Upgrade(Upgrade),
}

impl Next {
    /// `KeepAlive` when the connection may serve another request, else `Close`.
    pub(crate) fn done(keep_alive: bool) -> Next {
        if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }
}

/// Capacity a scratch buffer keeps from one request (or stream event) to the next, in bytes:
/// a typical frame or event fits; a buffer a large one grew past it is freed after that use.
/// Three such buffers stay within `CONNECTION_BYTES` beside an idle connection's measured
/// 9.3 KiB (docs/memory.md).
pub(crate) const KEPT_SCRATCH_BYTES: usize = 2 * 1024;

/// A connection's scratch buffers, reused by every request on it. They grow with the largest
/// frame spliced or event put together, while the request's body (or the stream event's
/// answer charge) is held and paid for, and are shrunk after each request or event.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Where an answer's body or an event is put together before it goes into `out`.
    pub(crate) text: Vec<u8>,
    /// Buffers of the push path.
    pub(crate) push: push::Scratch,
}

impl Scratch {
    /// Frees the buffers a large request or event grew past `KEPT_SCRATCH_BYTES`, so that a
    /// keep-alive connection does not hold its largest request's worth for its life.
    pub(crate) fn shrink(&mut self) {
        if self.text.capacity() > KEPT_SCRATCH_BYTES {
            self.text = Vec::new();
        }
        if self.push.frame.capacity() > KEPT_SCRATCH_BYTES {
            self.push.frame = Vec::new();
        }
        if self.push.text.capacity() > KEPT_SCRATCH_BYTES {
            self.push.text = String::new();
        }
    }
}

/// The peer is gone or stopped reading: nothing more can be said on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes arrived.
    Data,
    /// End of stream, a read error, or a buffer full of what we cannot serve.
    Closed,
    /// The deadline passed.
    TimedOut,
    /// Shutdown began while waiting.
    ShuttingDown,
    /// The buffer could not grow within the memory budget.
    OverBudget,
}

/// A connection's socket, its read buffer (bytes not consumed yet) and its answer buffer.
pub(crate) struct Io {
    pub(crate) stream: Socket,
    pub(crate) buf: BytesMut,
    pub(crate) out: Vec<u8>,
    /// Most bytes `buf` may hold before the peer counts as one we cannot serve.
    buffer_limit: usize,
    /// Bound of every write: a peer that stops reading cannot pin the connection.
    write_timeout: Duration,
    /// Pays for `out` past `WRITE_BUFFER_BYTES` while a large answer is written.
    out_charge: Charge,
    /// Pays for `buf` past `READ_BUFFER_BYTES` (long heads, pipelined requests).
    buf_charge: Charge,
    /// Header lines (CORS, `app::cors`) for the current request's answer: the next flush puts
    /// them into the head in `out`, then empties this.
    pub(crate) head_fields: Vec<u8>,
}

impl Io {
    /// Buffers for `stream`, allocated once and reused for every request on it.
    pub(crate) fn new(
        stream: Socket,
        buffer_limit: usize,
        write_timeout: Duration,
        budget: &'static Budget,
    ) -> Io {
        Io {
            stream,
            buf: BytesMut::with_capacity(READ_BUFFER_BYTES),
            out: Vec::with_capacity(WRITE_BUFFER_BYTES),
            buffer_limit,
            write_timeout,
            out_charge: budget.empty(),
            buf_charge: budget.empty(),
            head_fields: Vec::new(),
        }
    }

    /// Makes room for `additional` more bytes in `buf`, paying for growth past the
    /// connection's own read buffer before it is allocated. Err: it does not fit the budget.
    pub(crate) fn reserve_read(&mut self, additional: usize) -> Result<(), OverBudget> {
        // Room at the end, or room at the front that consumed bytes left: no allocation.
        if self.buf.capacity() - self.buf.len() >= additional || self.buf.try_reclaim(additional) {
            return Ok(());
        }
        // The buffer may grow to twice its size on the way (BytesMut grows like a Vec).
        let most = (self.buf.len() + additional).max(2 * self.buf.capacity());
        self.buf_charge
            .grow_to(most.saturating_sub(READ_BUFFER_BYTES), Use::Head)?;
        self.buf.reserve(additional);
        self.buf_charge
            .shrink_to(self.buf.capacity().saturating_sub(READ_BUFFER_BYTES));
        Ok(())
    }

    /// Gives a grown read buffer back once it holds nothing.
    pub(crate) fn shrink_read(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > READ_BUFFER_BYTES {
            self.buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
            self.buf_charge.shrink_to(0);
        }
    }

    /// Pays for the answer in `out` past the connection's own buffer, and for `also` bytes
    /// held beside it until it is written. Err: it does not fit the memory budget (the caller
    /// answers 503 instead, when nothing was done yet).
    pub(crate) fn pay_for_answer(&mut self, also: usize) -> Result<(), OverBudget> {
        let extra = self.out.capacity().saturating_sub(WRITE_BUFFER_BYTES);
        self.out_charge.grow_to(extra + also, Use::Reply)
    }

    /// Takes over a charge made for the coming answer before it was built.
    pub(crate) fn prepaid(&mut self, charge: Charge) {
        self.out_charge.absorb(charge);
    }

    /// Reads more bytes into `buf` before `deadline`; with `shutdown`, gives up when it begins.
    pub(crate) async fn read_more(
        &mut self,
        deadline: Instant,
        shutdown: Option<&mut watch::Receiver<bool>>,
    ) -> Read {
        if self.buf.len() >= self.buffer_limit {
            // The framer refuses heads past MAX_HEAD_BYTES and bodies past max_body_bytes and
            // consumes bodies as they come, so a full buffer means a peer we can't serve.
            return Read::Closed;
        }
        if self.reserve_read(READ_BUFFER_BYTES).is_err() {
            return Read::OverBudget;
        }
        let read = match shutdown {
            Some(shutdown) => tokio::select! {
                r = timeout_at(deadline, self.stream.read_buf(&mut self.buf)) => r,
                _ = hub::stopping(shutdown) => return Read::ShuttingDown,
            },
            None => timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await,
        };
        match read {
            Ok(Ok(0) | Err(_)) => Read::Closed,
            Ok(Ok(_)) => Read::Data,
            Err(_) => Read::TimedOut,
        }
    }

    /// Writes and clears `out`; a buffer grown past `WRITE_BUFFER_BYTES` is freed, and
    /// what paid for it given back.
    pub(crate) async fn flush(&mut self) -> Result<(), Closed> {
        if !self.head_fields.is_empty() {
            response::insert_fields(&mut self.out, &self.head_fields);
            self.head_fields.clear();
            // A few hundred bytes at most; the answer goes out even if they don't fit.
            let _ = self.pay_for_answer(0);
        }
        let r = timeout(self.write_timeout, write_out(&mut self.stream, &self.out)).await;
        self.out.clear();
        if self.out.capacity() > WRITE_BUFFER_BYTES {
            self.out = Vec::with_capacity(WRITE_BUFFER_BYTES);
        }
        self.out_charge.shrink_to(0);
        match r {
            Ok(Ok(())) => Ok(()),
            _ => Err(Closed),
        }
    }

    /// Writes `bytes` at once, past whatever `out` holds (interim answers).
    pub(crate) async fn write_now(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        match timeout(self.write_timeout, write_out(&mut self.stream, bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Closed),
        }
    }

    /// Closes after an answer the client may still be sending past (RFC 9112 §9.6): the
    /// write side first, then input is read and dropped until the client is done, up to
    /// `LINGER_SECS` and `LINGER_MAX_BYTES`. Closing with unread input would make the kernel
    /// answer with a reset, and the client would lose the answer or fail its upload.
    pub(crate) async fn linger(&mut self, shutdown: &mut watch::Receiver<bool>) {
        // Bounded: over TLS the shutdown writes a close_notify alert.
        let linger = Duration::from_secs(LINGER_SECS);
        if !matches!(timeout(linger, self.stream.shutdown()).await, Ok(Ok(()))) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(LINGER_SECS);
        let mut dropped = 0;
        while dropped <= LINGER_MAX_BYTES {
            self.buf.clear();
            self.buf.reserve(READ_BUFFER_BYTES);
            let read = tokio::select! {
                r = timeout_at(deadline, self.stream.read_buf(&mut self.buf)) => r,
                () = hub::stopping(shutdown) => return,
            };
            match read {
                Ok(Ok(n)) if n > 0 => dropped += n,
                _ => return,
            }
        }
    }

    /// Answers `err` and flushes; true when the connection may serve another request.
    pub(crate) async fn refuse(
        &mut self,
        hub: &Hub,
        err: &ApiError,
        persist: Persist,
        head_only: bool,
    ) -> Result<bool, Closed> {
        let keep = persist.keeps_alive() && !err.closes_connection();
        self.out.clear();
        err.write(&mut self.out, persist, head_only);
        // A 422 keeps its rendered body until the refusal is dropped, after the write.
        if self.pay_for_answer(err.held_bytes()).is_err() {
            // A refusal too large for the budget (a long 422) becomes the budget's refusal.
            self.out.clear();
            ApiError::OverBudget.write(&mut self.out, persist, head_only);
            hub.metrics.response(ApiError::OverBudget.status());
            self.flush().await?;
            return Ok(keep);
        }
        hub.metrics.response(err.status());
        self.flush().await?;
        Ok(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_grown_by_a_large_request_is_freed_and_a_small_one_kept() {
        let mut scratch = Scratch::default();
        scratch.text.extend_from_slice(&[b'\n'; 200 * 1024]);
        scratch.push.frame.extend_from_slice(&[b'x'; 64 * 1024]);
        scratch
            .push
            .text
            .push_str(&"y".repeat(KEPT_SCRATCH_BYTES + 1));
        scratch.shrink();
        assert_eq!(scratch.text.capacity(), 0);
        assert_eq!(scratch.push.frame.capacity(), 0);
        assert_eq!(scratch.push.text.capacity(), 0);
        // A buffer within the kept size stays allocated for the next request.
        scratch.push.frame.reserve_exact(KEPT_SCRATCH_BYTES);
        let kept = scratch.push.frame.capacity();
        scratch.shrink();
        assert_eq!(scratch.push.frame.capacity(), kept);
    }
}

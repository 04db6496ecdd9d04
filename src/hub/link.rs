//! What a device session shares with everyone who delivers to it or waits on it: its bounded
//! outbound queue, the "replaced" kick, and the "session ended" signal, in one small
//! allocation. A gateway holds thousands of idle devices, so an idle link must cost little:
//! the queue's storage grows on first use (tokio's mpsc allocates a 32-slot block up front,
//! about 2 KB per device).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::ack::Ack;
use super::budget::Charge;
use crate::wire::close::Close;

/// The closes a kicked session may send; the first is the default.
const KICK_REASONS: [Close; 3] = [Close::Replaced, Close::AlreadyConnected, Close::OverBudget];

/// Queue slots an empty queue keeps; a larger queue is freed once it empties.
pub(crate) const KEPT_QUEUE_SLOTS: usize = 8;

/// Where a frame waiting for a device's socket comes from: it decides what becomes of the
/// frame if the session ends before writing it (docs/protocol.md §20.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A push or a batch item: the offline mailbox, when on, keeps it.
    Push,
    /// A `/sse/send` request: never kept (its stream needs the device now).
    Send,
    /// A message the offline mailbox kept while the device was away, at this time
    /// (milliseconds since the Unix epoch); it goes back to the mailbox with that time.
    Kept {
        /// When it was first kept.
        at_ms: u64,
    },
    /// The `mailbox_gap` frame telling the device that `dropped` messages were lost.
    Gap {
        /// Messages dropped.
        dropped: u64,
    },
}

impl Source {
    /// True for frames the offline mailbox hands to a returning device, which are written
    /// before any other and do not count against `queue_depth` and `queue_bytes`.
    pub(crate) fn is_backlog(self) -> bool {
        matches!(self, Source::Kept { .. } | Source::Gap { .. })
    }
}

/// One frame waiting for a device's socket.
pub(crate) struct Outbound {
    /// The text frame, already spliced.
    pub frame: Utf8Bytes,
    /// Told whether the frame reached the socket; dropping it unreported means "not delivered".
    pub ack: Option<Ack>,
    /// The frame's share of the memory budget, given back when the frame is dropped.
    pub charge: Charge,
    /// Where it comes from.
    pub source: Source,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// `queue_depth` frames, or `queue_bytes` bytes, are waiting.
    Full,
    /// The session has ended.
    Ended,
}

/// How much may wait for one device's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Most frames (`queue_depth`).
    pub frames: usize,
    /// Most bytes of frames (`queue_bytes`); a frame alone always fits.
    pub bytes: usize,
}

/// One device session's queue and signals.
pub(crate) struct DeviceLink {
    frames: Mutex<Frames>,
    limits: QueueLimits,
    /// Bytes of frames queued or taken by the session and not written yet. Grows under the
    /// queue's lock; the session lowers it as frames reach the socket.
    pending_bytes: AtomicUsize,
    /// Wakes the session: a frame arrived, or it was kicked.
    wake: Notify,
    kicked: AtomicBool,
    /// Why it was kicked: an index into `KICK_REASONS`.
    kick_reason: AtomicU8,
    /// Wakes streams waiting on the device once the session has ended.
    gone: Notify,
    ended: AtomicBool,
}

struct Frames {
    /// The backlog (frames from the offline mailbox) first, then the live frames.
    queue: VecDeque<Outbound>,
    /// How many frames at the front of `queue` are the backlog (a u32 keeps `Frames` as
    /// small as without it: an idle device pays nothing for the mailbox).
    backlog: u32,
    ended: bool,
}

impl DeviceLink {
    /// A link whose queue holds at most what `limits` allow.
    pub(crate) fn new(limits: QueueLimits) -> DeviceLink {
        DeviceLink {
            frames: Mutex::new(Frames {
                queue: VecDeque::new(),
                backlog: 0,
                ended: false,
            }),
            limits: QueueLimits {
                frames: limits.frames.max(1),
                bytes: limits.bytes,
            },
            pending_bytes: AtomicUsize::new(0),
            wake: Notify::new(),
            kicked: AtomicBool::new(false),
            kick_reason: AtomicU8::new(0),
            gone: Notify::new(),
            ended: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Frames> {
        // Critical sections only move items in and out; a poisoned queue is still consistent.
        self.frames
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a frame for the session. On error the frame is dropped, which reports its
    /// acknowledgement as not delivered.
    pub(crate) fn push(&self, item: Outbound) -> Result<(), PushError> {
        self.try_push(item).map_err(|(why, _)| why)
    }

    /// `push` that hands the frame back when it is refused, for a caller that will try again.
    pub(crate) fn try_push(&self, item: Outbound) -> Result<(), (PushError, Outbound)> {
        let mut frames = self.lock();
        if frames.ended {
            return Err((PushError::Ended, item));
        }
        // The backlog is the mailbox's, bounded by its own settings.
        if frames.queue.len() - frames.backlog as usize >= self.limits.frames {
            return Err((PushError::Full, item));
        }
        let len = item.frame.len();
        let pending = self.pending_bytes.load(Ordering::Acquire);
        // A frame alone always fits, so a frame larger than `queue_bytes` is still deliverable.
        if pending > 0 && pending.saturating_add(len) > self.limits.bytes {
            return Err((PushError::Full, item));
        }
        self.pending_bytes.fetch_add(len, Ordering::AcqRel);
        frames.queue.push_back(item);
        drop(frames);
        // Stores a permit if the session is busy, so the frame is never missed.
        self.wake.notify_one();
        Ok(())
    }

    /// Takes up to `max` queued frames into `batch`, in order.
    pub(crate) fn take(&self, batch: &mut impl Extend<Outbound>, max: usize) {
        let mut frames = self.lock();
        let n = frames.queue.len().min(max);
        batch.extend(frames.queue.drain(..n));
        frames.backlog = frames.backlog.saturating_sub(n as u32);
        // A burst's slots are given back once it has passed: an idle device keeps few
        // (what its session charge covers), however deep its queue once was.
        if frames.queue.is_empty() && frames.queue.capacity() > KEPT_QUEUE_SLOTS {
            frames.queue = VecDeque::new();
        }
    }

    /// Puts the offline mailbox's frames for a returning device in front of everything
    /// queued, then `carried`: the frames a replaced session had not taken yet, which are
    /// older than any frame queued since. Both keep their order.
    pub(crate) fn restore(&self, backlog: VecDeque<Outbound>, carried: VecDeque<Outbound>) {
        let mut frames = self.lock();
        let carried_bytes: usize = carried
            .iter()
            .filter(|o| !o.source.is_backlog())
            .map(|o| o.frame.len())
            .sum();
        let mut queue = backlog;
        queue.extend(carried);
        let in_front = queue.iter().take_while(|o| o.source.is_backlog()).count();
        queue.append(&mut frames.queue);
        frames.queue = queue;
        frames.backlog = u32::try_from(in_front).unwrap_or(u32::MAX);
        self.pending_bytes
            .fetch_add(carried_bytes, Ordering::AcqRel);
        drop(frames);
        self.wake.notify_one();
    }

    /// Puts frames the session took and did not write back in front of the queue, in their
    /// order, so that ending the link hands them over with the rest. Their bytes still count
    /// as waiting: they were never `written`.
    pub(crate) fn put_back(&self, mut queue: VecDeque<Outbound>) {
        let mut frames = self.lock();
        queue.append(&mut frames.queue);
        frames.queue = queue;
        let in_front = frames
            .queue
            .iter()
            .take_while(|o| o.source.is_backlog())
            .count();
        frames.backlog = u32::try_from(in_front).unwrap_or(u32::MAX);
    }

    /// The session wrote a frame of `len` bytes (taken with `take`) to the socket.
    pub(crate) fn written(&self, len: usize) {
        self.pending_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// True when frames are waiting.
    pub(crate) fn has_frames(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// Resolves when a frame may be waiting or the session was kicked.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Tells the session another connection replaced it.
    pub(crate) fn kick(&self) {
        self.kick_with(Close::Replaced);
    }

    /// Tells the session to close with `why`: another session of its user id won, here or
    /// on another node of the cluster.
    pub(crate) fn kick_with(&self, why: Close) {
        let reason = KICK_REASONS.iter().position(|r| *r == why).unwrap_or(0);
        self.kick_reason
            .store(u8::try_from(reason).unwrap_or(0), Ordering::Release);
        self.kicked.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// True once the session was kicked.
    pub(crate) fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// The close a kicked session sends.
    pub(crate) fn kick_reason(&self) -> Close {
        let reason = usize::from(self.kick_reason.load(Ordering::Acquire));
        KICK_REASONS.get(reason).copied().unwrap_or(Close::Replaced)
    }

    /// Ends the session: refuses new frames, drops the waiting ones (reported as not
    /// delivered) and wakes every stream waiting on the device.
    pub(crate) fn end(&self) {
        // Acks resolve outside the lock.
        drop(self.end_taking());
    }

    /// Ends the session like [`DeviceLink::end`], handing over the frames it had not taken,
    /// in order, instead of dropping them.
    pub(crate) fn end_taking(&self) -> VecDeque<Outbound> {
        let waiting = {
            let mut frames = self.lock();
            frames.ended = true;
            frames.backlog = 0;
            std::mem::take(&mut frames.queue)
        };
        self.ended.store(true, Ordering::Release);
        self.gone.notify_waiters();
        waiting
    }

    /// True once the session has ended.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Resolves once the session has ended.
    pub(crate) async fn gone(&self) {
        loop {
            let notified = self.gone.notified();
            tokio::pin!(notified);
            // Registered before the check, so an `end` between the two is not missed.
            notified.as_mut().enable();
            if self.has_ended() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::ack::{AckSlot, Outcome};
    use crate::hub::budget::Budget;
    use std::time::Duration;

    fn budget() -> &'static Budget {
        let b: &'static Budget = Box::leak(Box::new(Budget::new()));
        b.set_limit(usize::MAX);
        b
    }

    fn frame(text: &str) -> Outbound {
        sourced(text, Source::Push)
    }

    fn sourced(text: &str, source: Source) -> Outbound {
        Outbound {
            frame: text.to_owned().into(),
            ack: None,
            charge: budget().empty(),
            source,
        }
    }

    fn frames(n: usize) -> QueueLimits {
        QueueLimits {
            frames: n,
            bytes: usize::MAX,
        }
    }

    #[test]
    fn a_panic_inside_the_lock_leaves_the_queue_working() {
        let link = std::sync::Arc::new(DeviceLink::new(frames(2)));
        link.push(frame("a")).unwrap();
        let poisoner = std::sync::Arc::clone(&link);
        let died = std::thread::spawn(move || {
            let _guard = poisoner.frames.lock();
            panic!("a bug inside a critical section");
        })
        .join();
        assert!(died.is_err());
        assert!(link.frames.is_poisoned());
        link.push(frame("b")).unwrap();
        let mut batch = Vec::new();
        link.take(&mut batch, 10);
        let texts: Vec<&str> = batch.iter().map(|o| o.frame.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
    }

    #[test]
    fn a_bounded_fifo_that_allocates_nothing_until_used() {
        let link = DeviceLink::new(frames(2));
        assert_eq!(link.lock().queue.capacity(), 0);
        link.push(frame("a")).unwrap();
        link.push(frame("b")).unwrap();
        assert_eq!(link.push(frame("c")), Err(PushError::Full));
        let mut batch = Vec::new();
        link.take(&mut batch, 10);
        let texts: Vec<&str> = batch.iter().map(|o| o.frame.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert!(!link.has_frames());
    }

    #[tokio::test]
    async fn ending_refuses_frames_reports_queued_ones_lost_and_wakes_waiters() {
        let link = std::sync::Arc::new(DeviceLink::new(frames(4)));
        let slot = AckSlot::new(1);
        link.push(Outbound {
            frame: "x".to_owned().into(),
            ack: slot.ack(0),
            charge: budget().empty(),
            source: Source::Push,
        })
        .unwrap();
        let waiter = {
            let link = std::sync::Arc::clone(&link);
            tokio::spawn(async move { link.gone().await })
        };
        link.end();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), slot.wait())
            .await
            .unwrap();
        assert_eq!(slot.outcome(0), Outcome::Lost);
        assert_eq!(link.push(frame("y")), Err(PushError::Ended));
        // A waiter that arrives after the end returns at once.
        tokio::time::timeout(Duration::from_secs(5), link.gone())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_push_or_kick_while_the_session_is_busy_is_not_missed() {
        let link = DeviceLink::new(frames(4));
        link.push(frame("a")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), link.woken())
            .await
            .unwrap();
        link.kick();
        tokio::time::timeout(Duration::from_secs(5), link.woken())
            .await
            .unwrap();
        assert!(link.is_kicked());
        assert_eq!(link.kick_reason(), Close::Replaced);
        link.kick_with(Close::AlreadyConnected);
        assert_eq!(link.kick_reason(), Close::AlreadyConnected);
    }

    #[test]
    fn queue_bytes_bound_what_waits_but_a_frame_alone_always_fits() {
        let link = DeviceLink::new(QueueLimits {
            frames: 10,
            bytes: 4,
        });
        link.push(frame("123456")).unwrap();
        assert_eq!(link.push(frame("a")), Err(PushError::Full));
        let mut batch = Vec::new();
        link.take(&mut batch, 10);
        // Taken is not written: the bytes still wait for the socket.
        assert_eq!(link.push(frame("a")), Err(PushError::Full));
        link.written(6);
        link.push(frame("ab")).unwrap();
        link.push(frame("cd")).unwrap();
        assert_eq!(link.push(frame("e")), Err(PushError::Full));
    }

    fn texts(batch: &[Outbound]) -> Vec<&str> {
        batch.iter().map(|o| o.frame.as_str()).collect()
    }

    #[test]
    fn the_backlog_goes_first_and_does_not_count_against_the_queue() {
        let link = DeviceLink::new(QueueLimits {
            frames: 2,
            bytes: 4,
        });
        // A live push that arrived before the backlog was put in place.
        link.push(frame("l1")).unwrap();
        let backlog: VecDeque<Outbound> = [
            sourced("gap", Source::Gap { dropped: 1 }),
            sourced("k1", Source::Kept { at_ms: 1 }),
            sourced("k2", Source::Kept { at_ms: 2 }),
        ]
        .into();
        let carried: VecDeque<Outbound> = [frame("c1")].into();
        link.restore(backlog, carried);
        // Two live frames of 2 bytes: the queue is full, the backlog aside.
        assert_eq!(link.push(frame("l2")), Err(PushError::Full));
        let mut batch = Vec::new();
        link.take(&mut batch, 2);
        assert_eq!(texts(&batch), ["gap", "k1"]);
        batch.clear();
        assert_eq!(link.push(frame("l2")), Err(PushError::Full));
        link.take(&mut batch, 10);
        assert_eq!(texts(&batch), ["k2", "c1", "l1"]);
        link.written(4);
        link.push(frame("l2")).unwrap();
        let left = link.end_taking();
        assert_eq!(
            left.iter().map(|o| o.frame.as_str()).collect::<Vec<_>>(),
            ["l2"]
        );
        assert!(link.has_ended());
        assert_eq!(link.push(frame("l3")), Err(PushError::Ended));
    }
}

//! The table of open `/sse/send` streams: correlation id -> the one device session allowed to
//! answer, and the channel its answers travel on. Same locking and `static` placement as the
//! device table.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use heapless::index_map::FnvIndexMap;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::budget::{heap_bytes, Budget, Charge, Use};
use super::devices::limit;
use crate::ops::limits::PENDING_TABLE_CAPACITY;
use crate::wire::envelope::{CorrelationId, UserId};

/// What a device said on an open stream.
pub(crate) enum StreamEvent {
    /// The link to the device's node of the cluster was lost: the stream ends with `Cluster
    /// unavailable` (what the device said meanwhile cannot reach this node).
    #[cfg(feature = "cluster")]
    Unreachable,
    /// A correlated message, as the device sent it.
    Message {
        /// The device's text, as it arrived.
        text: Utf8Bytes,
        /// The message ends the stream.
        is_final: bool,
        /// Its share of the memory budget while it waits for the upstream.
        charge: Charge,
    },
}

/// Why a device's answer could not be held for its stream, which then ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// The stream's buffer (`queue_depth` answers, `stream_buffer_bytes` bytes) is full: its
    /// upstream reads more slowly than the device answers.
    TooSlow,
    /// The answer did not fit the memory budget.
    OverBudget,
}

/// How much of a stream's buffer is in use, shared by the device's session (which adds
/// answers) and the stream (which takes them), and why the stream overflowed, if it did.
pub(crate) struct Buffered {
    bytes: AtomicUsize,
    max_bytes: usize,
    /// 0 while none; else `Overflow` + 1.
    overflow: AtomicU8,
}

impl Buffered {
    fn new(max_bytes: usize) -> Buffered {
        Buffered {
            bytes: AtomicUsize::new(0),
            max_bytes,
            overflow: AtomicU8::new(0),
        }
    }

    /// Makes room for `len` bytes; an answer alone always fits.
    fn reserve(&self, len: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held.saturating_add(len) <= self.max_bytes).then(|| held + len)
            })
            .is_ok()
    }

    /// The stream took an answer of `len` bytes off the buffer.
    pub(crate) fn taken(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Why the stream's entry was removed while its device lives, if it overflowed.
    pub(crate) fn overflow(&self) -> Option<Overflow> {
        match self.overflow.load(Ordering::Acquire) {
            1 => Some(Overflow::TooSlow),
            2 => Some(Overflow::OverBudget),
            _ => None,
        }
    }

    fn set_overflow(&self, why: Overflow) {
        let code = match why {
            Overflow::TooSlow => 1,
            Overflow::OverBudget => 2,
        };
        self.overflow.store(code, Ordering::Release);
    }
}

/// The sending half of an open stream, as a device's session finds it.
pub(crate) struct StreamTx {
    tx: mpsc::Sender<StreamEvent>,
    buffered: Arc<Buffered>,
}

impl StreamTx {
    /// Hands an answer to the stream without waiting: a device session never waits on an
    /// upstream. `Err` when the answer cannot be held; the caller then ends the stream
    /// ([`PendingTable::overflowed`]). A stream that ended meanwhile takes nothing: Ok.
    pub(crate) fn send(
        &self,
        text: Utf8Bytes,
        is_final: bool,
        budget: &'static Budget,
    ) -> Result<(), Overflow> {
        let len = text.len();
        if !self.buffered.reserve(len) {
            return Err(Overflow::TooSlow);
        }
        let Ok(charge) = budget.charge(heap_bytes(len), Use::Answer) else {
            self.buffered.taken(len);
            return Err(Overflow::OverBudget);
        };
        let event = StreamEvent::Message {
            text,
            is_final,
            charge,
        };
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            // The stream ended meanwhile; its own guard frees the id.
            Err(TrySendError::Closed(_)) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.buffered.taken(len);
                Err(Overflow::TooSlow)
            }
        }
    }
}

#[cfg(feature = "cluster")]
impl StreamTx {
    /// Resolves once the stream has ended on this node (its receiving half is gone).
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Ends the stream because the device's node cannot be reached; false when the stream's
    /// buffer is full, in which case the caller ends it as overflowed instead.
    pub(crate) fn unreachable(&self) -> bool {
        !matches!(
            self.tx.try_send(StreamEvent::Unreachable),
            Err(TrySendError::Full(_))
        )
    }
}

/// The receiving half of an open stream.
pub(crate) struct StreamRx {
    /// The device's answers, in order.
    pub events: mpsc::Receiver<StreamEvent>,
    /// What they hold of the stream's buffer.
    pub buffered: Arc<Buffered>,
}

/// A stream's answers. Dropping them frees the stream's correlation id however the stream
/// ends, including when its task is dropped.
pub(crate) struct Answers {
    /// The answers and what they hold of the stream's buffer.
    pub rx: StreamRx,
    cid: CorrelationId,
    streams: &'static Streams,
}

impl Answers {
    /// The answers of the stream just opened for `cid` in `streams`.
    pub(crate) fn new(rx: StreamRx, cid: CorrelationId, streams: &'static Streams) -> Answers {
        Answers { rx, cid, streams }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        self.streams.close(&self.cid, &self.rx);
    }
}

/// How much one stream may buffer for its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    /// Most answers (`queue_depth`).
    pub answers: usize,
    /// Most bytes of answers (`stream_buffer_bytes`); an answer alone always fits.
    pub bytes: usize,
}

struct Pending {
    user: UserId,
    session: u64,
    tx: mpsc::Sender<StreamEvent>,
    buffered: Arc<Buffered>,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The correlation id is already waiting (409).
    InUse,
    /// `max_pending_sends` streams are open (503).
    Full,
}

/// The stream table of this build.
pub(crate) type Streams = PendingTable<PENDING_TABLE_CAPACITY>;

/// The table of open `/sse/send` streams: correlation id → the device allowed to answer.
pub(crate) struct PendingTable<const N: usize> {
    map: Mutex<FnvIndexMap<CorrelationId, Pending, N>>,
    /// The runtime limit; 0 means the capacity (all-zero initial value, as above).
    max: AtomicUsize,
}

impl<const N: usize> Default for PendingTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PendingTable<N> {
    /// An empty table (const, so it can live in a `static`).
    pub(crate) const fn new() -> Self {
        PendingTable {
            map: Mutex::new(FnvIndexMap::new()),
            max: AtomicUsize::new(0),
        }
    }

    /// Sets the runtime limit (`max_pending_sends`), capped at the capacity.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max.min(N), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, FnvIndexMap<CorrelationId, Pending, N>> {
        // As in the device table: every critical section leaves the map consistent.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks that `id` could be opened now, without opening it (409 before 503).
    pub(crate) fn check(&self, id: &str) -> Result<(), OpenError> {
        let map = self.lock();
        if map.contains_key(id) {
            Err(OpenError::InUse)
        } else if map.len() >= limit(&self.max, N) {
            Err(OpenError::Full)
        } else {
            Ok(())
        }
    }

    /// Opens a stream for `id`, answerable only by `user`'s session `session`.
    pub(crate) fn open(
        &self,
        id: &CorrelationId,
        user: &UserId,
        session: u64,
        limits: StreamLimits,
    ) -> Result<StreamRx, OpenError> {
        let mut map = self.lock();
        if map.contains_key(id.as_str()) {
            return Err(OpenError::InUse);
        }
        if map.len() >= limit(&self.max, N) {
            return Err(OpenError::Full);
        }
        let (tx, events) = mpsc::channel(limits.answers.max(1));
        let buffered = Arc::new(Buffered::new(limits.bytes));
        let entry = Pending {
            user: user.clone(),
            session,
            tx,
            buffered: Arc::clone(&buffered),
        };
        map.insert(id.clone(), entry).map_err(|_| OpenError::Full)?;
        Ok(StreamRx { events, buffered })
    }

    /// Ends the stream behind `tx` because an answer could not be held: frees `id` if it
    /// still belongs to that stream (a newer one may reuse the id), and tells the stream why.
    pub(crate) fn overflowed(&self, id: &str, tx: &StreamTx, why: Overflow) {
        tx.buffered.set_overflow(why);
        let mut map = self.lock();
        if map.get(id).is_some_and(|p| p.tx.same_channel(&tx.tx)) {
            map.swap_remove(id);
        }
    }

    /// Frees `id` if it still belongs to the stream whose answers are `rx`'s: after an
    /// overflow the id may already belong to a newer stream, which must keep it.
    pub(crate) fn close(&self, id: &str, rx: &StreamRx) {
        let mut map = self.lock();
        if map
            .get(id)
            .is_some_and(|p| Arc::ptr_eq(&p.buffered, &rx.buffered))
        {
            map.swap_remove(id);
        }
    }

    /// Frees `id` if `user`'s session `session` may answer it: the stream's upstream is on
    /// another node of the cluster, and ended there. Its relay here sees the answers end.
    #[cfg(feature = "cluster")]
    pub(crate) fn cancel(&self, id: &str, user: &str, session: u64) -> bool {
        let mut map = self.lock();
        if map
            .get(id)
            .is_some_and(|p| p.session == session && p.user.as_str() == user)
        {
            map.swap_remove(id);
            true
        } else {
            false
        }
    }

    /// The stream waiting for `id`, if `user`'s session `session` may answer it.
    pub(crate) fn route(&self, id: &str, user: &str, session: u64) -> Option<StreamTx> {
        let map = self.lock();
        match map.get(id) {
            Some(p) if p.session == session && p.user.as_str() == user => Some(StreamTx {
                tx: p.tx.clone(),
                buffered: Arc::clone(&p.buffered),
            }),
            _ => None,
        }
    }

    /// Streams open now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::try_from(s).unwrap()
    }

    const L: StreamLimits = StreamLimits {
        answers: 4,
        bytes: usize::MAX,
    };

    #[test]
    fn a_panic_inside_the_lock_leaves_the_table_serving() {
        let p = std::sync::Arc::new(PendingTable::<8>::new());
        let poisoner = std::sync::Arc::clone(&p);
        let died = std::thread::spawn(move || {
            let _guard = poisoner.map.lock();
            panic!("a bug inside a critical section");
        })
        .join();
        assert!(died.is_err());
        assert!(p.map.is_poisoned());
        let id = CorrelationId::try_from("c1").unwrap();
        let rx = p.open(&id, &uid("dev"), 7, L).unwrap();
        assert!(p.route("c1", "dev", 7).is_some());
        p.close("c1", &rx);
        assert_eq!(p.check("c1"), Ok(()));
    }

    #[test]
    fn pending_ids_are_one_namespace_and_only_the_target_answers() {
        let p = PendingTable::<8>::new();
        p.set_max(2);
        let id = CorrelationId::try_from("c1").unwrap();
        let rx = p.open(&id, &uid("dev"), 7, L).unwrap();
        assert_eq!(p.check("c1"), Err(OpenError::InUse));
        assert_eq!(
            p.open(&id, &uid("other"), 9, L).err(),
            Some(OpenError::InUse)
        );
        assert!(p.route("c1", "dev", 7).is_some());
        assert!(p.route("c1", "other", 9).is_none());
        assert!(p.route("c1", "dev", 8).is_none());
        let id2 = CorrelationId::try_from("c2").unwrap();
        let _rx2 = p.open(&id2, &uid("dev"), 7, L).unwrap();
        assert_eq!(p.check("c3"), Err(OpenError::Full));
        p.close("c1", &rx);
        assert_eq!(p.check("c1"), Ok(()));
    }

    #[test]
    fn closing_a_stream_spares_a_newer_one_with_the_same_id() {
        let p = PendingTable::<8>::new();
        let id = CorrelationId::try_from("c1").unwrap();
        let old_rx = p.open(&id, &uid("dev"), 7, L).unwrap();
        let old_tx = p.route("c1", "dev", 7).unwrap();
        p.overflowed("c1", &old_tx, Overflow::TooSlow);
        let new_rx = p.open(&id, &uid("dev"), 7, L).unwrap();
        // The overflowed stream's late cleanup, and a second overflow report, spare the
        // newer stream that took the id meanwhile.
        p.close("c1", &old_rx);
        p.overflowed("c1", &old_tx, Overflow::TooSlow);
        assert_eq!(p.check("c1"), Err(OpenError::InUse));
        assert_eq!(new_rx.buffered.overflow(), None);
        let new_tx = p.route("c1", "dev", 7).unwrap();
        p.overflowed("c1", &new_tx, Overflow::OverBudget);
        assert_eq!(p.check("c1"), Ok(()));
        assert_eq!(new_rx.buffered.overflow(), Some(Overflow::OverBudget));
    }

    fn budget(limit: usize) -> &'static Budget {
        let b: &'static Budget = Box::leak(Box::new(Budget::new()));
        b.set_limit(limit);
        b
    }

    #[test]
    fn a_stream_holds_answers_up_to_its_bytes_and_the_budget() {
        let p = PendingTable::<8>::new();
        let id = CorrelationId::try_from("c1").unwrap();
        let limits = StreamLimits {
            answers: 8,
            bytes: 10,
        };
        let mut rx = p.open(&id, &uid("dev"), 7, limits).unwrap();
        let tx = p.route("c1", "dev", 7).unwrap();
        let b = budget(heap_bytes(12));
        // Alone, an answer over the stream's bytes fits.
        tx.send("x".repeat(12).into(), false, b).unwrap();
        assert_eq!(tx.send("y".into(), false, b), Err(Overflow::TooSlow));
        let Ok(StreamEvent::Message { text, .. }) = rx.events.try_recv() else {
            panic!("no answer")
        };
        rx.buffered.taken(text.len());
        drop(text);
        tx.send("abcd".into(), false, b).unwrap();
        assert_eq!(tx.send("abcd".into(), false, b), Err(Overflow::OverBudget));
        assert_eq!(b.refused(Use::Answer), 1);
    }
}

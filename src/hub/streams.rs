//! The table of open `/sse/send` streams: correlation id -> the one device session allowed to
//! answer, and the channel its answers travel on. Same locking and `static` placement as the
//! device table.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use heapless::index_map::FnvIndexMap;
use tokio::sync::mpsc;

use super::devices::limit;
use crate::wire::envelope::{CorrelationId, UserId};

/// What a device said on an open stream.
pub(crate) enum StreamEvent {
    /// A correlated message, as the device sent it.
    Message {
        /// The device's text, as it arrived.
        text: tokio_tungstenite::tungstenite::Utf8Bytes,
        /// The message ends the stream.
        is_final: bool,
    },
}

struct Pending {
    user: UserId,
    session: u64,
    tx: mpsc::Sender<StreamEvent>,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The correlation id is already waiting (409).
    InUse,
    /// `max_pending_sends` streams are open (503).
    Full,
}

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
        depth: usize,
    ) -> Result<mpsc::Receiver<StreamEvent>, OpenError> {
        let mut map = self.lock();
        if map.contains_key(id.as_str()) {
            return Err(OpenError::InUse);
        }
        if map.len() >= limit(&self.max, N) {
            return Err(OpenError::Full);
        }
        let (tx, rx) = mpsc::channel(depth.max(1));
        let entry = Pending {
            user: user.clone(),
            session,
            tx,
        };
        map.insert(id.clone(), entry).map_err(|_| OpenError::Full)?;
        Ok(rx)
    }

    /// Frees `id` if it still belongs to the stream behind `tx` (a newer stream may reuse the id).
    pub(crate) fn close_stream(&self, id: &str, tx: &mpsc::Sender<StreamEvent>) {
        let mut map = self.lock();
        if map.get(id).is_some_and(|p| p.tx.same_channel(tx)) {
            map.swap_remove(id);
        }
    }

    /// Frees `id`.
    pub(crate) fn close(&self, id: &str) {
        self.lock().swap_remove(id);
    }

    /// The stream waiting for `id`, if `user`'s session `session` may answer it.
    pub(crate) fn route(
        &self,
        id: &str,
        user: &str,
        session: u64,
    ) -> Option<mpsc::Sender<StreamEvent>> {
        let map = self.lock();
        match map.get(id) {
            Some(p) if p.session == session && p.user.as_str() == user => Some(p.tx.clone()),
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
        let _rx = p.open(&id, &uid("dev"), 7, 4).unwrap();
        assert!(p.route("c1", "dev", 7).is_some());
        p.close("c1");
        assert_eq!(p.check("c1"), Ok(()));
    }

    #[test]
    fn pending_ids_are_one_namespace_and_only_the_target_answers() {
        let p = PendingTable::<8>::new();
        p.set_max(2);
        let id = CorrelationId::try_from("c1").unwrap();
        let _rx = p.open(&id, &uid("dev"), 7, 4).unwrap();
        assert_eq!(p.check("c1"), Err(OpenError::InUse));
        assert_eq!(
            p.open(&id, &uid("other"), 9, 4).err(),
            Some(OpenError::InUse)
        );
        assert!(p.route("c1", "dev", 7).is_some());
        assert!(p.route("c1", "other", 9).is_none());
        assert!(p.route("c1", "dev", 8).is_none());
        let id2 = CorrelationId::try_from("c2").unwrap();
        let _rx2 = p.open(&id2, &uid("dev"), 7, 4).unwrap();
        assert_eq!(p.check("c3"), Err(OpenError::Full));
        p.close("c1");
        assert_eq!(p.check("c1"), Ok(()));
    }

    #[test]
    fn closing_a_stream_spares_a_newer_one_with_the_same_id() {
        let p = PendingTable::<8>::new();
        let id = CorrelationId::try_from("c1").unwrap();
        let _old_rx = p.open(&id, &uid("dev"), 7, 4).unwrap();
        let old_tx = p.route("c1", "dev", 7).unwrap();
        p.close("c1");
        let _new_rx = p.open(&id, &uid("dev"), 7, 4).unwrap();
        p.close_stream("c1", &old_tx);
        assert_eq!(p.check("c1"), Err(OpenError::InUse));
        let new_tx = p.route("c1", "dev", 7).unwrap();
        p.close_stream("c1", &new_tx);
        assert_eq!(p.check("c1"), Ok(()));
    }
}

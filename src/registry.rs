//! The fixed-capacity tables shared by all connections: connected devices (with each one's
//! bounded outbound queue) and open `/sse/send` streams keyed by correlation id.
//!
//! Both are heapless index maps behind a `std::sync::Mutex`: every critical section is a hash
//! lookup or insert, never an `.await`, so a blocking lock is cheaper than an async one. The
//! daemon keeps them in `static`s, so the slots live in `.bss` and cost RSS only once touched.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use heapless::index_map::FnvIndexMap;
use tokio::sync::mpsc;

use crate::ack::Ack;
use crate::limits::{MAX_CORRELATION_ID_BYTES, MAX_USER_ID_BYTES};
use crate::link::DeviceLink;

/// A device's user id, as the table stores it.
pub type UserId = heapless::String<MAX_USER_ID_BYTES>;
/// A correlation id, as the table of open streams stores it.
pub type CorrelationId = heapless::String<MAX_CORRELATION_ID_BYTES>;

/// One frame waiting for a device's socket.
pub struct Outbound {
    /// The text frame, already spliced.
    pub frame: tokio_tungstenite::tungstenite::Utf8Bytes,
    /// Told whether the frame reached the socket; dropping it unreported means "not delivered".
    pub ack: Option<Ack>,
}

/// A connected device's entry.
struct Device {
    session: u64,
    link: Arc<DeviceLink>,
}

/// What a session holds while it is registered. Dropping it ends the link: queued frames
/// are reported lost and waiting streams learn the device is gone.
pub struct Registration {
    /// This session's number, unique within the process.
    pub session: u64,
    /// The session's queue and signals.
    pub link: Arc<DeviceLink>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.link.end();
    }
}

/// Why a device could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The user id is connected and the policy keeps the old session.
    Duplicate,
    /// `max_connections` devices are connected.
    Full,
}

/// A handle on a connected device, cloned out of the table for one delivery.
pub struct DeviceHandle {
    /// The session the handle belongs to.
    pub session: u64,
    /// The session's queue and signals.
    pub link: Arc<DeviceLink>,
}

/// The device table: user id → session, fixed capacity `N`, runtime limit `max` under it.
///
/// Every field starts as zero bytes, so a `static` table lands in `.bss`: neither the binary
/// nor the resident memory pays for slots that were never used.
pub struct DeviceTable<const N: usize> {
    map: Mutex<FnvIndexMap<UserId, Device, N>>,
    /// The runtime limit; 0 means the capacity.
    max: AtomicUsize,
    /// The last session number handed out.
    last_session: AtomicU64,
}

/// A runtime limit stored as 0 for "the capacity", keeping the initial value all zero bytes.
fn limit(stored: &AtomicUsize, capacity: usize) -> usize {
    match stored.load(Ordering::Relaxed) {
        0 => capacity,
        max => max,
    }
}

impl<const N: usize> Default for DeviceTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> DeviceTable<N> {
    /// An empty table (const, so it can live in a `static`).
    pub const fn new() -> Self {
        DeviceTable {
            map: Mutex::new(FnvIndexMap::new()),
            max: AtomicUsize::new(0),
            last_session: AtomicU64::new(0),
        }
    }

    /// Sets the runtime limit (`max_connections`), capped at the capacity.
    pub fn set_max(&self, max: usize) {
        self.max.store(max.min(N), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, FnvIndexMap<UserId, Device, N>> {
        // A poisoned lock means a panic in a critical section that only inserts or removes;
        // the map itself is still consistent, so keep serving.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session for `user`, applying the duplicate policy.
    pub fn register(
        &self,
        user: &UserId,
        replace: bool,
        queue_depth: usize,
    ) -> Result<Registration, RegisterError> {
        let mut map = self.lock();
        let replaced = match map.get(user.as_str()) {
            Some(_) if !replace => return Err(RegisterError::Duplicate),
            Some(old) => Some(Arc::clone(&old.link)),
            None => {
                if map.len() >= limit(&self.max, N) {
                    return Err(RegisterError::Full);
                }
                None
            }
        };
        let session = self.last_session.fetch_add(1, Ordering::Relaxed) + 1;
        let link = Arc::new(DeviceLink::new(queue_depth));
        let device = Device {
            session,
            link: Arc::clone(&link),
        };
        // Replacing overwrites the slot; a fresh id has room (checked above).
        if map.insert(user.clone(), device).is_err() {
            return Err(RegisterError::Full);
        }
        drop(map);
        if let Some(old) = replaced {
            old.kick();
        }
        Ok(Registration { session, link })
    }

    /// Removes `user` if the entry still belongs to `session` (a replacement keeps its slot).
    pub fn unregister(&self, user: &str, session: u64) -> bool {
        let mut map = self.lock();
        match map.get(user) {
            Some(d) if d.session == session => {
                map.swap_remove(user);
                true
            }
            _ => false,
        }
    }

    /// The device's queue and liveness, if connected.
    pub fn get(&self, user: &str) -> Option<DeviceHandle> {
        let map = self.lock();
        map.get(user).map(|d| DeviceHandle {
            session: d.session,
            link: Arc::clone(&d.link),
        })
    }

    /// Devices connected now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no device is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the lock can be taken now: part of the watchdog self-check.
    pub fn is_usable(&self) -> bool {
        match self.map.try_lock() {
            Ok(_) => true,
            Err(std::sync::TryLockError::WouldBlock) => true,
            Err(std::sync::TryLockError::Poisoned(_)) => false,
        }
    }
}

/// What a device said on an open stream.
pub enum StreamEvent {
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
pub enum OpenError {
    /// The correlation id is already waiting (409).
    InUse,
    /// `max_pending_sends` streams are open (503).
    Full,
}

/// The table of open `/sse/send` streams: correlation id → the device allowed to answer.
pub struct PendingTable<const N: usize> {
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
    pub const fn new() -> Self {
        PendingTable {
            map: Mutex::new(FnvIndexMap::new()),
            max: AtomicUsize::new(0),
        }
    }

    /// Sets the runtime limit (`max_pending_sends`), capped at the capacity.
    pub fn set_max(&self, max: usize) {
        self.max.store(max.min(N), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, FnvIndexMap<CorrelationId, Pending, N>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks that `id` could be opened now, without opening it (409 before 503).
    pub fn check(&self, id: &str) -> Result<(), OpenError> {
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
    pub fn open(
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
    pub fn close_stream(&self, id: &str, tx: &mpsc::Sender<StreamEvent>) {
        let mut map = self.lock();
        if map.get(id).is_some_and(|p| p.tx.same_channel(tx)) {
            map.swap_remove(id);
        }
    }

    /// Frees `id`.
    pub fn close(&self, id: &str) {
        self.lock().swap_remove(id);
    }

    /// The stream waiting for `id`, if `user`'s session `session` may answer it.
    pub fn route(&self, id: &str, user: &str, session: u64) -> Option<mpsc::Sender<StreamEvent>> {
        let map = self.lock();
        match map.get(id) {
            Some(p) if p.session == session && p.user.as_str() == user => Some(p.tx.clone()),
            _ => None,
        }
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::try_from(s).unwrap()
    }

    #[test]
    fn reject_policy_keeps_the_first_session() {
        let t = DeviceTable::<8>::new();
        let a = t.register(&uid("a"), false, 4).unwrap();
        assert_eq!(
            t.register(&uid("a"), false, 4).err(),
            Some(RegisterError::Duplicate)
        );
        assert_eq!(t.get("a").unwrap().session, a.session);
    }

    #[test]
    fn replace_policy_kicks_the_old_session_and_keeps_the_slot() {
        let t = DeviceTable::<8>::new();
        let old = t.register(&uid("a"), true, 4).unwrap();
        let new = t.register(&uid("a"), true, 4).unwrap();
        assert!(old.link.is_kicked());
        assert!(!new.link.is_kicked());
        // The old session's late cleanup must not remove the new one.
        assert!(!t.unregister("a", old.session));
        assert_eq!(t.get("a").unwrap().session, new.session);
        assert!(t.unregister("a", new.session));
        assert!(t.is_empty());
    }

    #[test]
    fn runtime_limit_applies_under_the_capacity() {
        let t = DeviceTable::<8>::new();
        t.set_max(2);
        let _a = t.register(&uid("a"), false, 1).unwrap();
        let _b = t.register(&uid("b"), false, 1).unwrap();
        assert_eq!(
            t.register(&uid("c"), false, 1).err(),
            Some(RegisterError::Full)
        );
        // Replacing an existing id needs no new slot.
        assert!(t.register(&uid("b"), true, 1).is_ok());
    }

    #[test]
    fn the_link_ends_when_the_session_drops_its_registration() {
        let t = DeviceTable::<8>::new();
        let reg = t.register(&uid("a"), false, 1).unwrap();
        let h = t.get("a").unwrap();
        assert!(!h.link.has_ended());
        drop(reg);
        assert!(h.link.has_ended());
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

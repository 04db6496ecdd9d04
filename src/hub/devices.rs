//! The device table: connected devices by user id, each with its bounded outbound queue.
//!
//! A heapless index map behind a `std::sync::Mutex`: every critical section is a hash lookup
//! or insert, never an `.await`, so a blocking lock is cheaper than an async one. The daemon
//! keeps it in a `static`, so the slots live in `.bss` and cost RSS only once touched.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use heapless::index_map::FnvIndexMap;

use super::link::{DeviceLink, QueueLimits};
use crate::wire::envelope::UserId;

/// Pause between attempts of `lockable_within`.
const LOCK_RETRY: Duration = Duration::from_millis(1);

/// A connected device's entry.
struct Device {
    session: u64,
    link: Arc<DeviceLink>,
}

/// What a session holds while it is registered. Dropping it ends the link: queued frames
/// are reported lost and waiting streams learn the device is gone.
pub(crate) struct Registration {
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
pub(crate) enum RegisterError {
    /// The user id is connected and the policy keeps the old session.
    Duplicate,
    /// `max_connections` devices are connected.
    Full,
}

/// A handle on a connected device, cloned out of the table for one delivery.
pub(crate) struct DeviceHandle {
    /// The session the handle belongs to.
    pub session: u64,
    /// The session's queue and signals.
    pub link: Arc<DeviceLink>,
}

/// The device table: user id → session, fixed capacity `N`, runtime limit `max` under it.
///
/// Every field starts as zero bytes, so a `static` table lands in `.bss`: neither the binary
/// nor the resident memory pays for slots that were never used.
pub(crate) struct DeviceTable<const N: usize> {
    map: Mutex<FnvIndexMap<UserId, Device, N>>,
    /// The runtime limit; 0 means the capacity.
    max: AtomicUsize,
    /// The last session number handed out.
    last_session: AtomicU64,
}

/// A runtime limit stored as 0 for "the capacity", keeping the initial value all zero bytes.
pub(super) fn limit(stored: &AtomicUsize, capacity: usize) -> usize {
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
    pub(crate) const fn new() -> Self {
        DeviceTable {
            map: Mutex::new(FnvIndexMap::new()),
            max: AtomicUsize::new(0),
            last_session: AtomicU64::new(0),
        }
    }

    /// Sets the runtime limit (`max_connections`), capped at the capacity.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max.min(N), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, FnvIndexMap<UserId, Device, N>> {
        // A poisoned lock means a panic in a critical section that only inserts or removes;
        // the map itself is still consistent, so keep serving.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session for `user`, applying the duplicate policy.
    pub(crate) fn register(
        &self,
        user: &UserId,
        replace: bool,
        limits: QueueLimits,
    ) -> Result<Registration, RegisterError> {
        self.register_replacing(user, replace, limits)
            .map(|(registration, _)| registration)
    }

    /// [`DeviceTable::register`], also handing back the link of the session it replaced
    /// (already kicked), whose frames the offline mailbox carries over to the new one.
    pub(crate) fn register_replacing(
        &self,
        user: &UserId,
        replace: bool,
        limits: QueueLimits,
    ) -> Result<(Registration, Option<Arc<DeviceLink>>), RegisterError> {
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
        let link = Arc::new(DeviceLink::new(limits));
        let device = Device {
            session,
            link: Arc::clone(&link),
        };
        // Replacing overwrites the slot; a fresh id has room (checked above).
        if map.insert(user.clone(), device).is_err() {
            return Err(RegisterError::Full);
        }
        drop(map);
        if let Some(old) = &replaced {
            old.kick();
        }
        Ok((Registration { session, link }, replaced))
    }

    /// Removes `user` if the entry still belongs to `session` (a replacement keeps its slot).
    pub(crate) fn unregister(&self, user: &str, session: u64) -> bool {
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
    pub(crate) fn get(&self, user: &str) -> Option<DeviceHandle> {
        let map = self.lock();
        map.get(user).map(|d| DeviceHandle {
            session: d.session,
            link: Arc::clone(&d.link),
        })
    }

    /// Copies the ids of at most `max` connected devices into `out` (cleared first); returns
    /// how many are connected. The lock is held for the copy only.
    pub(crate) fn ids(&self, out: &mut Vec<UserId>, max: usize) -> usize {
        out.clear();
        let map = self.lock();
        out.extend(map.keys().take(max).cloned());
        map.len()
    }

    /// Devices connected now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when the table's lock can be had within `deadline`, i.e. no task holds it
    /// forever: part of the self-check. Called from the watchdog's own thread, never from
    /// the event loop. A poisoned lock counts as usable: `lock` recovers it.
    pub(crate) fn lockable_within(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        loop {
            match self.map.try_lock() {
                Ok(_) | Err(TryLockError::Poisoned(_)) => return true,
                Err(TryLockError::WouldBlock) if Instant::now() >= until => return false,
                Err(TryLockError::WouldBlock) => std::thread::sleep(LOCK_RETRY),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::try_from(s).unwrap()
    }

    fn q(frames: usize) -> QueueLimits {
        QueueLimits {
            frames,
            bytes: usize::MAX,
        }
    }

    #[test]
    fn ids_copies_at_most_max_and_counts_all() {
        let t = DeviceTable::<8>::new();
        let _regs: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| t.register(&uid(id), false, q(1)).unwrap())
            .collect();
        let mut out = vec![uid("stale")];
        assert_eq!(t.ids(&mut out, 2), 3);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|id| ["a", "b", "c"].contains(&id.as_str())));
        assert_eq!(t.ids(&mut out, 10), 3);
        out.sort();
        assert_eq!(out, [uid("a"), uid("b"), uid("c")]);
    }

    /// Panics unwind (Cargo.toml): a task that panics while holding the lock leaves it
    /// poisoned, and the table must go on serving every other session.
    #[test]
    fn a_panic_inside_the_lock_leaves_the_table_serving() {
        let t = std::sync::Arc::new(DeviceTable::<8>::new());
        let _a = t.register(&uid("a"), false, q(4)).unwrap();
        let poisoner = std::sync::Arc::clone(&t);
        let died = std::thread::spawn(move || {
            let _guard = poisoner.map.lock();
            panic!("a bug inside a critical section");
        })
        .join();
        assert!(died.is_err());
        assert!(t.map.is_poisoned());
        assert!(t.lockable_within(Duration::from_millis(10)));
        assert!(t.get("a").is_some());
        let b = t.register(&uid("b"), false, q(4)).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.unregister("b", b.session));
    }

    #[test]
    fn a_lock_held_forever_fails_the_self_check() {
        let t = std::sync::Arc::new(DeviceTable::<8>::new());
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::sync::Arc::clone(&t);
        let thread = std::thread::spawn(move || {
            let _guard = holder.map.lock();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
        });
        held_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(!t.lockable_within(Duration::from_millis(20)));
        release_tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(t.lockable_within(Duration::from_millis(20)));
    }

    #[test]
    fn reject_policy_keeps_the_first_session() {
        let t = DeviceTable::<8>::new();
        let a = t.register(&uid("a"), false, q(4)).unwrap();
        assert_eq!(
            t.register(&uid("a"), false, q(4)).err(),
            Some(RegisterError::Duplicate)
        );
        assert_eq!(t.get("a").unwrap().session, a.session);
    }

    #[test]
    fn replace_policy_kicks_the_old_session_and_keeps_the_slot() {
        let t = DeviceTable::<8>::new();
        let old = t.register(&uid("a"), true, q(4)).unwrap();
        let new = t.register(&uid("a"), true, q(4)).unwrap();
        assert!(old.link.is_kicked());
        assert!(!new.link.is_kicked());
        // The old session's late cleanup must not remove the new one.
        assert!(!t.unregister("a", old.session));
        assert_eq!(t.get("a").unwrap().session, new.session);
        assert!(t.unregister("a", new.session));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn runtime_limit_applies_under_the_capacity() {
        let t = DeviceTable::<8>::new();
        t.set_max(2);
        let _a = t.register(&uid("a"), false, q(1)).unwrap();
        let _b = t.register(&uid("b"), false, q(1)).unwrap();
        assert_eq!(
            t.register(&uid("c"), false, q(1)).err(),
            Some(RegisterError::Full)
        );
        // Replacing an existing id needs no new slot.
        assert!(t.register(&uid("b"), true, q(1)).is_ok());
    }

    #[test]
    fn the_link_ends_when_the_session_drops_its_registration() {
        let t = DeviceTable::<8>::new();
        let reg = t.register(&uid("a"), false, q(1)).unwrap();
        let h = t.get("a").unwrap();
        assert!(!h.link.has_ended());
        drop(reg);
        assert!(h.link.has_ended());
    }
}

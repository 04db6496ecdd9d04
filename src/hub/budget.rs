//! The memory budget (docs/memory.md): one account of every byte traffic makes the daemon
//! hold — frames queued for devices, answers buffered for `/sse/send` streams, request bodies
//! being read, answers waiting for a slow reader, device sessions' buffers. Bytes are reserved
//! before they are allocated and released when they are freed, so `used` never passes `limit`:
//! work that does not fit is refused at the door instead of growing the process until the
//! service manager kills it (and every device on the gateway with it).
//!
//! One atomic add per reservation and one per release: no lock on the push path.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// What a reservation is for: the refusal counters are kept per use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// A frame spliced for a device (push, batch item, send request).
    Frame,
    /// A device's answer buffered for a `/sse/send` stream.
    Answer,
    /// An HTTP request body being read.
    Body,
    /// An HTTP answer larger than a connection's own buffer, while it is written.
    Reply,
    /// A new device session's buffers.
    Session,
    /// A large message a device is sending, while tungstenite buffers it.
    Inbound,
    /// A connection's read buffer grown past its own size (long heads, pipelined requests).
    Head,
    /// A message kept for a device that is away (the offline mailbox).
    Mailbox,
    /// A TLS connection's buffers: a handshake's, a session's at rest, a large record's.
    #[cfg(feature = "tls")]
    Tls,
    /// What another node of the cluster sent for a device here (a push's frames, a send's
    /// request), while it waits for the device's socket.
    #[cfg(feature = "cluster")]
    Remote,
}

impl Use {
    /// Every use, in the order of the refusal counters.
    pub(crate) const ALL: &'static [Use] = &[
        Use::Frame,
        Use::Answer,
        Use::Body,
        Use::Reply,
        Use::Session,
        Use::Inbound,
        Use::Head,
        Use::Mailbox,
        #[cfg(feature = "tls")]
        Use::Tls,
        #[cfg(feature = "cluster")]
        Use::Remote,
    ];

    /// The label of its refusal counter (`/metrics`, Prometheus `reason`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Use::Frame => "frame",
            Use::Answer => "answer",
            Use::Body => "body",
            Use::Reply => "reply",
            Use::Session => "session",
            Use::Inbound => "inbound",
            Use::Head => "head",
            Use::Mailbox => "mailbox",
            #[cfg(feature = "tls")]
            Use::Tls => "tls",
            #[cfg(feature = "cluster")]
            Use::Remote => "remote",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Bookkeeping bytes held beside each buffered item (its queue slot, the `Bytes` header).
pub(crate) const ITEM_OVERHEAD_BYTES: usize = 96;

/// The bytes the heap really gives up for an item of `len` bytes: the allocator rounds each
/// allocation up to its size class (mimalloc's classes are at most 1/8 apart), plus the
/// item's bookkeeping. Charges use this, so the budget bounds memory, not payload.
pub(crate) const fn heap_bytes(len: usize) -> usize {
    len.saturating_add(len / 8)
        .saturating_add(ITEM_OVERHEAD_BYTES)
}

/// How many uses there are (one refusal counter each).
const USES: usize = Use::ALL.len();

/// A reservation did not fit the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverBudget;

/// Frees at least the given number of bytes of the budget if it holds that much (else
/// nothing) and returns how many it freed: what gives way when live work does not fit (the
/// offline mailbox's kept messages).
pub(crate) type GiveWay = fn(usize) -> usize;

/// The daemon's one memory budget.
pub(crate) struct Budget {
    /// Most bytes that may be reserved at once; 0 until the daemon sets it (all zero bytes,
    /// so the `static` lands in `.bss`).
    limit: AtomicUsize,
    used: AtomicUsize,
    /// The most `used` has been since start.
    peak: AtomicUsize,
    /// Refusals per use (plain atomics: `metrics` reads the budget, not the other way).
    refused: [AtomicU64; USES],
    /// Asked to free room when a reservation for anything but [`Use::Mailbox`] does not fit.
    give_way: OnceLock<GiveWay>,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Budget {
    /// A budget of zero bytes (const, for `static`s); [`Budget::set_limit`] opens it.
    pub(crate) const fn new() -> Budget {
        Budget {
            limit: AtomicUsize::new(0),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refused: [const { AtomicU64::new(0) }; USES],
            give_way: OnceLock::new(),
        }
    }

    /// Installs what gives way when live work does not fit (once per budget). It is called
    /// without any of the caller's locks held, and never for a [`Use::Mailbox`] reservation,
    /// so it may take the lock of what it frees.
    pub(crate) fn set_give_way(&self, give_way: GiveWay) {
        let _ = self.give_way.set(give_way);
    }

    /// Sets the limit, in bytes.
    pub(crate) fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// The limit, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes reserved at once since start.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Reservations refused so far for `what`.
    pub(crate) fn refused(&self, what: Use) -> u64 {
        self.refused
            .get(what.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Reserves `bytes` for `what`; the charge gives them back when dropped.
    pub(crate) fn charge(&'static self, bytes: usize, what: Use) -> Result<Charge, OverBudget> {
        self.reserve(bytes, what)?;
        Ok(Charge {
            budget: self,
            bytes,
        })
    }

    /// A charge of nothing, to grow later.
    pub(crate) fn empty(&'static self) -> Charge {
        Charge {
            budget: self,
            bytes: 0,
        }
    }

    fn reserve(&self, bytes: usize, what: Use) -> Result<(), OverBudget> {
        if self.try_reserve(bytes) {
            return Ok(());
        }
        // Kept messages give way to live work, never the other way round.
        if what != Use::Mailbox {
            if let Some(give_way) = self.give_way.get() {
                let free = self.limit().saturating_sub(self.used());
                if give_way(bytes.saturating_sub(free)) > 0 && self.try_reserve(bytes) {
                    return Ok(());
                }
            }
        }
        if let Some(c) = self.refused.get(what.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Err(OverBudget)
    }

    fn try_reserve(&self, bytes: usize) -> bool {
        let limit = self.limit();
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            });
        match fits {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes reserved from a [`Budget`], given back when the charge is dropped. It travels with
/// what it pays for (a queued frame, a buffered answer) or sits beside a buffer it follows.
pub(crate) struct Charge {
    budget: &'static Budget,
    bytes: usize,
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({} bytes)", self.bytes)
    }
}

impl Charge {
    /// Bytes this charge holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes over what `other` holds.
    pub(crate) fn absorb(&mut self, mut other: Charge) {
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Grows the charge to `total` bytes (nothing when it holds that much already).
    pub(crate) fn grow_to(&mut self, total: usize, what: Use) -> Result<(), OverBudget> {
        if total > self.bytes {
            self.budget.reserve(total - self.bytes, what)?;
            self.bytes = total;
        }
        Ok(())
    }

    /// Gives back what is held past `total` bytes.
    pub(crate) fn shrink_to(&mut self, total: usize) {
        if total < self.bytes {
            self.budget.release(self.bytes - total);
            self.bytes = total;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> &'static Budget {
        let b: &'static Budget = Box::leak(Box::new(Budget::new()));
        b.set_limit(limit);
        b
    }

    #[test]
    fn reservations_never_pass_the_limit_and_come_back_when_dropped() {
        let b = budget(100);
        let a = b.charge(60, Use::Frame).unwrap();
        assert_eq!(b.charge(41, Use::Frame).err(), Some(OverBudget));
        let c = b.charge(40, Use::Body).unwrap();
        assert_eq!(b.used(), 100);
        assert_eq!(b.charge(1, Use::Answer).err(), Some(OverBudget));
        drop(a);
        assert_eq!(b.used(), 40);
        drop(c);
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 100);
        assert_eq!(b.refused(Use::Frame), 1);
        assert_eq!(b.refused(Use::Answer), 1);
        assert_eq!(b.refused(Use::Body), 0);
    }

    #[test]
    fn a_charge_grows_and_shrinks_with_its_buffer() {
        let b = budget(100);
        let mut c = b.empty();
        c.grow_to(30, Use::Body).unwrap();
        c.grow_to(20, Use::Body).unwrap();
        assert_eq!(c.bytes, 30);
        assert_eq!(c.grow_to(101, Use::Body), Err(OverBudget));
        assert_eq!(c.bytes, 30, "a refused growth keeps what was held");
        c.absorb(b.charge(5, Use::Reply).unwrap());
        assert_eq!((c.bytes, b.used()), (35, 35));
        c.shrink_to(30);
        c.shrink_to(10);
        assert_eq!(b.used(), 10);
        drop(c);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_closed_budget_refuses_everything_but_nothing() {
        let b: &'static Budget = Box::leak(Box::new(Budget::new()));
        assert!(b.charge(0, Use::Session).is_ok());
        assert!(b.charge(1, Use::Session).is_err());
        assert!(b.charge(usize::MAX, Use::Session).is_err());
    }

    #[test]
    fn live_work_makes_kept_messages_give_way_but_not_the_other_way_round() {
        static KEPT: std::sync::Mutex<Vec<Charge>> = std::sync::Mutex::new(Vec::new());
        fn give_way(bytes: usize) -> usize {
            let mut kept = KEPT.lock().unwrap();
            if kept.iter().map(Charge::bytes).sum::<usize>() < bytes {
                return 0;
            }
            let mut freed = 0;
            while freed < bytes {
                // The oldest first.
                if kept.is_empty() {
                    break;
                }
                freed += kept.remove(0).bytes();
            }
            freed
        }
        let b = budget(100);
        b.set_give_way(give_way);
        for _ in 0..3 {
            let kept = b.charge(20, Use::Mailbox).unwrap();
            KEPT.lock().unwrap().push(kept);
        }
        let frame = b.charge(30, Use::Frame).unwrap();
        assert_eq!(b.used(), 90);
        // A message to keep never pushes out another.
        assert_eq!(b.charge(20, Use::Mailbox).err(), Some(OverBudget));
        // Live work takes what it needs from the oldest kept messages.
        let body = b.charge(30, Use::Body).unwrap();
        assert_eq!(KEPT.lock().unwrap().len(), 2);
        assert_eq!(b.used(), 100);
        // Not enough to give: refused as before, and nothing given for nothing.
        assert_eq!(b.charge(60, Use::Answer).err(), Some(OverBudget));
        assert_eq!(KEPT.lock().unwrap().len(), 2);
        let stream = b.charge(20, Use::Answer).unwrap();
        assert_eq!(KEPT.lock().unwrap().len(), 1);
        assert_eq!(b.refused(Use::Mailbox), 1);
        assert_eq!(b.refused(Use::Answer), 1);
        drop((frame, body, stream));
        KEPT.lock().unwrap().clear();
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn concurrent_charges_never_overshoot() {
        let b = budget(10_000);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..10_000 {
                        if let Ok(c) = b.charge(7, Use::Frame) {
                            held.push(c);
                        }
                        assert!(b.used() <= 10_000);
                        if held.len() > 300 {
                            held.clear();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.used(), 0);
    }
}

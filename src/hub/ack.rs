//! Delivery acknowledgements. A push is answered `success` only once its frame was written to the
//! device's socket (docs/protocol.md §4.4), so the HTTP side waits on an [`AckSlot`] that the
//! device session resolves. A slot is allocated once per upstream connection and reused for every
//! push on it, so the push path allocates nothing for this.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::wire::listed::listed;

const UNRESOLVED: u8 = 0;
const DELIVERED: u8 = 1;
const LOST: u8 = 2;
const KEPT: u8 = 3;
/// Outcomes from here on are "not kept", one per [`NotKept`] reason.
const NOT_KEPT: u8 = 4;

listed! {
    /// Why the offline mailbox did not keep a frame its device did not get (docs/protocol.md
    /// §20.3): the `reason` of an answer with `"queued":false`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum NotKept {
        /// The frame alone is longer than `mailbox_bytes`.
        TooLarge,
        /// The device has no mailbox and `max_connections` other devices have one.
        MailboxesFull,
        /// The memory budget has no room for it.
        OverBudget,
        /// The session ended while the frame was being written: it may have reached the
        /// device, so it is not kept (a message is never delivered twice).
        InFlight,
    }
}

impl NotKept {
    /// Every reason, in the order of the refusal counters.
    pub(crate) const ALL: [NotKept; 4] = [
        NotKept::TooLarge,
        NotKept::MailboxesFull,
        NotKept::OverBudget,
        NotKept::InFlight,
    ];

    /// The answer's `reason` and the counter's label.
    pub(crate) fn code(self) -> &'static str {
        match self {
            NotKept::TooLarge => "too_large",
            NotKept::MailboxesFull => "mailboxes_full",
            NotKept::OverBudget => "over_budget",
            NotKept::InFlight => "in_flight",
        }
    }

    /// Its place in [`NotKept::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What became of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written to the device's socket.
    Delivered,
    /// Dropped before it was written: the session ended first.
    Lost,
    /// Not delivered; the offline mailbox keeps it for the device's return.
    Kept,
    /// Not delivered, and the offline mailbox could not keep it.
    NotKept(NotKept),
}

/// Outcomes of up to `capacity` frames of one request, and a way to wait for them.
pub(crate) struct AckSlot {
    outcomes: Box<[AtomicU8]>,
    unresolved: AtomicUsize,
    /// Woken when the last acknowledgement resolves.
    notify: Notify,
    /// Woken (a stored permit) whenever any acknowledgement resolves.
    progress: Notify,
}

impl AckSlot {
    /// A slot for requests of at most `capacity` frames.
    pub(crate) fn new(capacity: usize) -> Arc<AckSlot> {
        Arc::new(AckSlot {
            outcomes: (0..capacity.max(1))
                .map(|_| AtomicU8::new(UNRESOLVED))
                .collect(),
            unresolved: AtomicUsize::new(0),
            notify: Notify::new(),
            progress: Notify::new(),
        })
    }

    /// An acknowledgement for frame `index`; the frame's request must wait before reusing the slot.
    /// Returns `None` when `index` is past the capacity.
    pub(crate) fn ack(self: &Arc<Self>, index: usize) -> Option<Ack> {
        let cell = self.outcomes.get(index)?;
        cell.store(UNRESOLVED, Ordering::Relaxed);
        self.unresolved.fetch_add(1, Ordering::AcqRel);
        Some(Ack {
            slot: Arc::clone(self),
            index,
            outcome: LOST,
        })
    }

    /// Waits until every acknowledgement handed out has been resolved or dropped.
    pub(crate) async fn wait(&self) {
        while self.unresolved.load(Ordering::Acquire) != 0 {
            // `notify_one` stores a permit, so a resolution between the check and the await
            // is not missed; a stale permit only costs one more check.
            self.notify.notified().await;
        }
    }

    /// Resolves once an acknowledgement resolved since the last call (or at once, if one
    /// did before anyone waited): a frame of this request left its queue.
    pub(crate) async fn progressed(&self) {
        self.progress.notified().await;
    }

    /// True once frame `index`'s acknowledgement is resolved (delivered, lost or kept).
    pub(crate) fn resolved(&self, index: usize) -> bool {
        self.outcomes
            .get(index)
            .is_none_or(|c| c.load(Ordering::Acquire) != UNRESOLVED)
    }

    /// The outcome of frame `index` after [`AckSlot::wait`].
    pub(crate) fn outcome(&self, index: usize) -> Outcome {
        match self.outcomes.get(index).map(|c| c.load(Ordering::Acquire)) {
            Some(DELIVERED) => Outcome::Delivered,
            Some(KEPT) => Outcome::Kept,
            Some(n) if n >= NOT_KEPT => NotKept::ALL
                .get(usize::from(n - NOT_KEPT))
                .map_or(Outcome::Lost, |&why| Outcome::NotKept(why)),
            _ => Outcome::Lost,
        }
    }
}

/// One frame's acknowledgement. Dropping it without [`Ack::delivered`] records it as lost,
/// which is what happens to frames still queued when a session ends.
pub(crate) struct Ack {
    slot: Arc<AckSlot>,
    index: usize,
    outcome: u8,
}

impl Ack {
    /// Records that the frame reached the socket.
    pub(crate) fn delivered(mut self) {
        self.outcome = DELIVERED;
    }

    /// Records that the offline mailbox kept the frame.
    pub(crate) fn kept(mut self) {
        self.outcome = KEPT;
    }

    /// Records that the offline mailbox could not keep the frame, and why.
    pub(crate) fn not_kept(mut self, why: NotKept) {
        // At most four reasons: the sum stays far below u8::MAX.
        self.outcome = NOT_KEPT + why.index() as u8;
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(cell) = self.slot.outcomes.get(self.index) {
            cell.store(self.outcome, Ordering::Release);
        }
        self.slot.progress.notify_one();
        if self.slot.unresolved.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.slot.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outcomes_are_recorded_and_wait_returns_when_all_resolve() {
        let slot = AckSlot::new(3);
        let a = slot.ack(0).unwrap();
        let b = slot.ack(1).unwrap();
        let c = slot.ack(2).unwrap();
        assert!(slot.ack(3).is_none());
        let waiter = {
            let slot = Arc::clone(&slot);
            tokio::spawn(async move { slot.wait().await })
        };
        a.delivered();
        drop(b);
        assert!(!waiter.is_finished());
        c.delivered();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(slot.outcome(0), Outcome::Delivered);
        assert_eq!(slot.outcome(1), Outcome::Lost);
        assert_eq!(slot.outcome(2), Outcome::Delivered);
    }

    #[tokio::test]
    async fn kept_and_not_kept_outcomes_carry_their_reason() {
        let slot = AckSlot::new(NotKept::ALL.len() + 1);
        slot.ack(0).unwrap().kept();
        for (i, why) in NotKept::ALL.iter().enumerate() {
            slot.ack(i + 1).unwrap().not_kept(*why);
        }
        slot.wait().await;
        assert_eq!(slot.outcome(0), Outcome::Kept);
        for (i, why) in NotKept::ALL.iter().enumerate() {
            assert_eq!(slot.outcome(i + 1), Outcome::NotKept(*why));
        }
        assert_eq!(NotKept::every(), NotKept::ALL.to_vec());
    }

    #[tokio::test]
    async fn a_slot_is_reusable_after_wait() {
        let slot = AckSlot::new(1);
        for round in 0..3 {
            let ack = slot.ack(0).unwrap();
            if round % 2 == 0 {
                ack.delivered();
            } else {
                drop(ack);
            }
            slot.wait().await;
            let want = if round % 2 == 0 {
                Outcome::Delivered
            } else {
                Outcome::Lost
            };
            assert_eq!(slot.outcome(0), want);
        }
    }
}

//! The offline mailbox (docs/protocol.md §20): pushes for a device that is away are kept, in
//! order, and written to it first when it returns. Bounded per device (`mailbox_messages`,
//! `mailbox_bytes`), in age (`mailbox_ttl_secs`, wall clock), in devices (at most
//! `max_connections` mailboxes) and by the memory budget, of which kept messages are the first
//! thing to give way. The table lives in a `static`, like the device table: its slots cost
//! memory only once used, and nothing at all while the mailbox is off.
//!
//! One lock decides between "deliver now" and "keep": a push that finds no session keeps its
//! frame under it, and a session registers (taking its mailbox) and leaves (handing back what
//! it had not taken) under it. So a frame is never kept for a connected device, and a connected
//! device's mailbox is always empty. Lock order: this one, then the device table, then a link.
//! Under it only [`Use::Mailbox`] charges are made, which never ask anything to give way, so
//! [`Mailboxes::give_way`] may take it from inside any other charge.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use heapless::index_map::FnvIndexMap;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::ack::NotKept;
use super::budget::{heap_bytes, Budget, Charge, Use};
use super::counter::Counter;
use super::devices::{DeviceTable, RegisterError, Registration};
use super::link::{DeviceLink, Outbound, PushError, QueueLimits, Source};
use super::metrics::MailboxStats;
use crate::wire::envelope::UserId;
use crate::wire::listed::listed;
use crate::wire::mailbox_file::{Damage, Item, Reader, Writer};

listed! {
    /// Why a kept message was dropped before its device came back (docs/protocol.md §20.2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Dropped {
        /// `mailbox_messages` newer messages came after it.
        Count,
        /// Newer messages needed its bytes under `mailbox_bytes`.
        Bytes,
        /// It was older than `mailbox_ttl_secs`.
        Ttl,
        /// Live work needed its memory (the mailbox gives way first).
        Budget,
    }
}

impl Dropped {
    /// Every reason, in the order of the counters.
    pub(crate) const ALL: [Dropped; 4] = [
        Dropped::Count,
        Dropped::Bytes,
        Dropped::Ttl,
        Dropped::Budget,
    ];

    /// The counter's label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Dropped::Count => "count",
            Dropped::Bytes => "bytes",
            Dropped::Ttl => "ttl",
            Dropped::Budget => "budget",
        }
    }
}

/// What the mailbox may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MailboxLimits {
    /// Messages per device (`mailbox_messages`); 0: the mailbox is off.
    pub messages: usize,
    /// Bytes of frames per device (`mailbox_bytes`).
    pub bytes: usize,
    /// Age after which a kept message is dropped, in milliseconds (`mailbox_ttl_secs`).
    pub ttl_ms: u64,
    /// Devices with a mailbox (`max_connections`); 0 means the capacity.
    pub mailboxes: usize,
}

impl MailboxLimits {
    const OFF: MailboxLimits = MailboxLimits {
        messages: 0,
        bytes: 0,
        ttl_ms: 0,
        mailboxes: 0,
    };

    fn expired(&self, at_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(at_ms) > self.ttl_ms
    }
}

/// Milliseconds since the Unix epoch: kept messages age by the wall clock, which goes on
/// while the daemon is stopped (a monotonic clock starts again with each process).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What one kept message is charged: its frame as the heap holds it, plus its slot in the
/// mailbox's queue (counted twice over: a queue grows by doubling).
pub(crate) const fn kept_bytes(len: usize) -> usize {
    heap_bytes(len).saturating_add(2 * std::mem::size_of::<Kept>())
}

/// The control frame a returning device gets before its kept messages when some were dropped.
pub(crate) fn gap_frame(dropped: u64) -> String {
    format!("{{\"type\":\"mailbox_gap\",\"dropped\":{dropped}}}")
}

/// One kept message.
struct Kept {
    /// The frame, exactly as a live push would have written it.
    frame: Utf8Bytes,
    /// Its share of the memory budget.
    charge: Charge,
    /// When it was kept, in milliseconds since the Unix epoch.
    at_ms: u64,
}

/// One away device's messages, oldest first.
#[derive(Default)]
struct Mailbox {
    messages: VecDeque<Kept>,
    /// Bytes of the frames in `messages`.
    bytes: usize,
    /// Messages dropped since the device last heard of a gap.
    dropped: u64,
}

impl Mailbox {
    /// Gives back the queue's room once it is mostly unused, so a mailbox that once held
    /// many messages does not keep their slots uncharged.
    fn tidy(&mut self) {
        if self.messages.is_empty() {
            self.messages = VecDeque::new();
        } else if self.messages.capacity() > 4 * self.messages.len() {
            self.messages.shrink_to(2 * self.messages.len());
        }
    }
}

struct Inner<const N: usize> {
    boxes: FnvIndexMap<UserId, Mailbox, N>,
    limits: MailboxLimits,
}

/// What became of a frame handed to [`Mailboxes::deliver_or_keep`] or the hub's `deliver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// In the device's queue; its acknowledgement reports the write.
    Queued,
    /// The device's queue is full.
    Full,
    /// No session, and the mailbox is off.
    NotConnected,
    /// No session; the mailbox keeps it (its acknowledgement says so).
    Kept,
    /// No session; the mailbox could not keep it (its acknowledgement says why).
    NotKept,
}

/// The table of mailboxes: user id → kept messages, fixed capacity `N`.
pub(crate) struct Mailboxes<const N: usize> {
    inner: Mutex<Inner<N>>,
    on: AtomicBool,
    held_messages: AtomicU64,
    held_bytes: AtomicU64,
    /// What the kept messages hold of the memory budget.
    held_charge: AtomicU64,
    kept: Counter,
    delivered: Counter,
    dropped: [Counter; Dropped::ALL.len()],
    not_kept: [Counter; NotKept::ALL.len()],
}

impl<const N: usize> Default for Mailboxes<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Mailboxes<N> {
    /// An empty table, off (const, so it can live in a `static`).
    pub(crate) const fn new() -> Self {
        Mailboxes {
            inner: Mutex::new(Inner {
                boxes: FnvIndexMap::new(),
                limits: MailboxLimits::OFF,
            }),
            on: AtomicBool::new(false),
            held_messages: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            held_charge: AtomicU64::new(0),
            kept: Counter::new(),
            delivered: Counter::new(),
            dropped: [const { Counter::new() }; Dropped::ALL.len()],
            not_kept: [const { Counter::new() }; NotKept::ALL.len()],
        }
    }

    /// Applies the settings; `limits.messages` 0 leaves the mailbox off.
    pub(crate) fn configure(&self, limits: MailboxLimits) {
        self.lock().limits = limits;
        self.on.store(limits.messages > 0, Ordering::Release);
    }

    /// True when messages for away devices are kept.
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Inner<N>> {
        // Critical sections leave the table consistent between steps; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A kept message was written to its device.
    pub(crate) fn delivered(&self) {
        self.delivered.inc();
    }

    /// An undelivered message was not kept, for `why` (counted where the mailbox itself did
    /// not decide: a frame lost in flight, a frame the budget refused before it was made).
    pub(crate) fn count_not_kept(&self, why: NotKept) {
        self.not_kept[why.index()].inc();
    }

    /// What the mailbox holds now and has done.
    pub(crate) fn stats(&self) -> MailboxStats {
        MailboxStats {
            messages: self.held_messages.load(Ordering::Relaxed),
            bytes: self.held_bytes.load(Ordering::Relaxed),
            kept: self.kept.get(),
            delivered: self.delivered.get(),
            dropped: Dropped::ALL
                .iter()
                .map(|d| (d.label(), self.dropped[*d as usize].get()))
                .collect(),
            not_kept: NotKept::ALL
                .iter()
                .map(|n| (n.code(), self.not_kept[n.index()].get()))
                .collect(),
        }
    }

    fn held(&self, messages: i64, bytes: i64, charge: i64) {
        // Every subtraction follows the addition of what it takes away.
        add_signed(&self.held_messages, messages);
        add_signed(&self.held_bytes, bytes);
        add_signed(&self.held_charge, charge);
    }

    fn drop_front(&self, mailbox: &mut Mailbox, why: Dropped) -> Option<usize> {
        let kept = mailbox.messages.pop_front()?;
        let len = kept.frame.len();
        mailbox.bytes -= len;
        mailbox.dropped += 1;
        self.dropped[why as usize].inc();
        let charge = kept.charge.bytes();
        self.held(-1, -(len as i64), -(charge as i64));
        Some(charge)
    }

    /// Keeps `frame` (kept at `at_ms`) for `user`, making room by dropping its oldest
    /// messages. `charge` is what the frame holds already; it grows to the kept size.
    fn keep_locked(
        &self,
        inner: &mut Inner<N>,
        user: &UserId,
        frame: Utf8Bytes,
        mut charge: Charge,
        at_ms: u64,
    ) -> Result<(), NotKept> {
        let limits = inner.limits;
        let len = frame.len();
        let refused = |why: NotKept| {
            self.count_not_kept(why);
            Err(why)
        };
        if len > limits.bytes {
            return refused(NotKept::TooLarge);
        }
        if charge.grow_to(kept_bytes(len), Use::Mailbox).is_err() {
            return refused(NotKept::OverBudget);
        }
        let mailbox = match mailbox_for(inner, user) {
            Ok(mailbox) => mailbox,
            Err(why) => return refused(why),
        };
        while mailbox.messages.len() >= limits.messages {
            self.drop_front(mailbox, Dropped::Count);
        }
        while mailbox.bytes + len > limits.bytes {
            if self.drop_front(mailbox, Dropped::Bytes).is_none() {
                break;
            }
        }
        mailbox.tidy();
        self.held(1, len as i64, charge.bytes() as i64);
        mailbox.messages.push_back(Kept {
            frame,
            charge,
            at_ms,
        });
        mailbox.bytes += len;
        Ok(())
    }

    /// Hands `item` to `user`'s session if one is registered, else keeps it. Decided under
    /// the mailbox's lock, so it cannot race a session registering or leaving.
    pub(crate) fn deliver_or_keep<const M: usize>(
        &self,
        devices: &DeviceTable<M>,
        user: &UserId,
        item: Outbound,
        now_ms: u64,
    ) -> Routed {
        let mut inner = self.lock();
        let item = match devices.get(user) {
            Some(device) => match device.link.try_push(item) {
                Ok(()) => return Routed::Queued,
                Err((PushError::Full, _)) => return Routed::Full,
                // Only a session that died without leaving (a panic) ends its link
                // unregistered: keep the frame for the next one.
                Err((PushError::Ended, item)) => item,
            },
            None => item,
        };
        let Outbound {
            frame, ack, charge, ..
        } = item;
        match self.keep_locked(&mut inner, user, frame, charge, now_ms) {
            Ok(()) => {
                self.kept.inc();
                if let Some(ack) = ack {
                    ack.kept();
                }
                Routed::Kept
            }
            Err(why) => {
                if let Some(ack) = ack {
                    ack.not_kept(why);
                }
                Routed::NotKept
            }
        }
    }

    /// Registers a session for `user` and puts what its mailbox kept in front of its queue:
    /// a `mailbox_gap` frame when messages were dropped, then the kept messages that are not
    /// too old, then (with `replace`) the frames the replaced session had not taken.
    /// Nothing is taken when the registration is refused.
    pub(crate) fn register<const M: usize>(
        &self,
        devices: &DeviceTable<M>,
        user: &UserId,
        replace: bool,
        queue: QueueLimits,
        budget: &'static Budget,
        now_ms: u64,
    ) -> Result<Registration, RegisterError> {
        let mut inner = self.lock();
        let (registration, replaced) = devices.register_replacing(user, replace, queue)?;
        let mut backlog = VecDeque::new();
        if let Some(mailbox) = inner.boxes.swap_remove(user.as_str()) {
            let ttl = inner.limits;
            let charge: usize = mailbox.messages.iter().map(|k| k.charge.bytes()).sum();
            self.held(
                -(mailbox.messages.len() as i64),
                -(mailbox.bytes as i64),
                -(charge as i64),
            );
            let mut dropped = mailbox.dropped;
            for kept in mailbox.messages {
                if ttl.expired(kept.at_ms, now_ms) {
                    self.dropped[Dropped::Ttl as usize].inc();
                    dropped += 1;
                    continue;
                }
                backlog.push_back(Outbound {
                    frame: kept.frame,
                    ack: None,
                    charge: kept.charge,
                    source: Source::Kept { at_ms: kept.at_ms },
                });
            }
            if dropped > 0 {
                backlog.push_front(Outbound {
                    frame: gap_frame(dropped).into(),
                    ack: None,
                    // A few dozen bytes, once per return: the session's own charge covers it.
                    charge: budget.empty(),
                    source: Source::Gap { dropped },
                });
            }
        }
        let carried = replaced.map(|old| old.end_taking()).unwrap_or_default();
        if !backlog.is_empty() || !carried.is_empty() {
            registration.link.restore(backlog, carried);
        }
        Ok(registration)
    }

    /// A session ends: it leaves the device table, and, if it was still the registered one,
    /// the frames it had not taken go to its mailbox in order: kept messages with their
    /// time, pushes as kept now, an unsent gap back into the count; `/sse/send` requests
    /// are dropped. A session that was replaced hands nothing over (its frames went to the
    /// new one).
    pub(crate) fn leave<const M: usize>(
        &self,
        devices: &DeviceTable<M>,
        user: &UserId,
        session: u64,
        link: &DeviceLink,
        now_ms: u64,
    ) {
        let mut inner = self.lock();
        if !devices.unregister(user, session) {
            drop(inner);
            link.end();
            return;
        }
        let mut gap = 0;
        let mut sends = Vec::new();
        for item in link.end_taking() {
            let Outbound {
                frame,
                ack,
                charge,
                source,
            } = item;
            match source {
                Source::Push => match self.keep_locked(&mut inner, user, frame, charge, now_ms) {
                    Ok(()) => {
                        self.kept.inc();
                        if let Some(ack) = ack {
                            ack.kept();
                        }
                    }
                    Err(why) => {
                        if let Some(ack) = ack {
                            ack.not_kept(why);
                        }
                    }
                },
                Source::Kept { at_ms } if inner.limits.expired(at_ms, now_ms) => {
                    self.dropped[Dropped::Ttl as usize].inc();
                    gap += 1;
                }
                Source::Kept { at_ms } => {
                    if self
                        .keep_locked(&mut inner, user, frame, charge, at_ms)
                        .is_err()
                    {
                        gap += 1;
                    }
                }
                Source::Gap { dropped } => gap += dropped,
                Source::Send => sends.push((frame, ack, charge)),
            }
        }
        if gap > 0 {
            add_gap(&mut inner, user, gap);
        }
        drop(inner);
        // Their acknowledgements (none today) and charges resolve outside the lock.
        drop(sends);
    }

    /// Frees at least `bytes` of the memory budget if the mailbox holds that much, by
    /// dropping kept messages, the oldest first (across devices); returns what it freed.
    /// Holding less, it drops nothing: the work is refused anyway.
    pub(crate) fn give_way(&self, bytes: usize) -> usize {
        if self.held_charge.load(Ordering::Relaxed) < bytes as u64
            || self.held_messages.load(Ordering::Relaxed) == 0
        {
            return 0;
        }
        let mut inner = self.lock();
        let mut freed = 0;
        while freed < bytes {
            // The mailbox with the oldest message, and the age of the next oldest elsewhere:
            // it gives until its front is younger than that (one scan per run, not per message).
            let mut oldest: Option<(usize, u64)> = None;
            let mut runner_up = u64::MAX;
            for (i, (_, mailbox)) in inner.boxes.iter().enumerate() {
                let Some(front) = mailbox.messages.front() else {
                    continue;
                };
                match oldest {
                    Some((_, at)) if front.at_ms >= at => runner_up = runner_up.min(front.at_ms),
                    _ => {
                        if let Some((_, at)) = oldest {
                            runner_up = runner_up.min(at);
                        }
                        oldest = Some((i, front.at_ms));
                    }
                }
            }
            let Some((i, _)) = oldest else { break };
            let Some((_, mailbox)) = inner.boxes.get_index_mut(i) else {
                break;
            };
            while freed < bytes
                && mailbox
                    .messages
                    .front()
                    .is_some_and(|m| m.at_ms <= runner_up)
            {
                freed += self.drop_front(mailbox, Dropped::Budget).unwrap_or(0);
            }
            mailbox.tidy();
        }
        freed
    }

    /// Drops every kept message older than `mailbox_ttl_secs`. Delivery checks the age too;
    /// this gives their memory back while their devices stay away.
    pub(crate) fn sweep(&self, now_ms: u64) {
        if self.held_messages.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut inner = self.lock();
        let limits = inner.limits;
        for (_, mailbox) in &mut inner.boxes {
            let before = mailbox.messages.len();
            while mailbox
                .messages
                .front()
                .is_some_and(|m| limits.expired(m.at_ms, now_ms))
            {
                self.drop_front(mailbox, Dropped::Ttl);
            }
            if mailbox.messages.len() != before {
                mailbox.tidy();
            }
        }
    }

    /// Writes every mailbox to `out`: (devices, messages) written.
    pub(crate) fn save<W: Write>(&self, out: &mut Writer<W>) -> io::Result<(usize, usize)> {
        let inner = self.lock();
        let mut messages = 0;
        for (user, mailbox) in &inner.boxes {
            let count = u32::try_from(mailbox.messages.len()).unwrap_or(u32::MAX);
            out.device(user, mailbox.dropped, count)?;
            for kept in mailbox.messages.iter().take(count as usize) {
                out.message(kept.at_ms, kept.frame.as_bytes())?;
                messages += 1;
            }
        }
        Ok((inner.boxes.len(), messages))
    }

    /// Keeps what a state file holds, under today's limits: messages too old, too large or
    /// over the budget are dropped and counted in their device's gap. Returns how many of its
    /// messages the mailbox holds after. The file must have been read through once already
    /// (`mailbox_file::verify`).
    pub(crate) fn restore<R: Read>(
        &self,
        reader: &mut Reader<R>,
        budget: &'static Budget,
        now_ms: u64,
    ) -> Result<usize, Damage> {
        let mut inner = self.lock();
        let mut user: Option<UserId> = None;
        let before = self.held_messages.load(Ordering::Relaxed);
        while let Some(item) = reader.next_item()? {
            match item {
                Item::Device {
                    user: id, dropped, ..
                } => {
                    let id = UserId::try_from(id.as_str())
                        .map_err(|_| Damage::Malformed("a user id longer than 64 bytes"))?;
                    if dropped > 0 {
                        add_gap(&mut inner, &id, dropped);
                    }
                    user = Some(id);
                }
                Item::Message { kept_at_ms, frame } => {
                    let Some(id) = &user else {
                        return Err(Damage::Malformed("a message before any device"));
                    };
                    if inner.limits.expired(kept_at_ms, now_ms) {
                        self.dropped[Dropped::Ttl as usize].inc();
                        add_gap(&mut inner, id, 1);
                        continue;
                    }
                    let frame = Utf8Bytes::from(frame);
                    if self
                        .keep_locked(&mut inner, id, frame, budget.empty(), kept_at_ms)
                        .is_err()
                    {
                        add_gap(&mut inner, id, 1);
                    }
                }
            }
        }
        let after = self.held_messages.load(Ordering::Relaxed);
        Ok(usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX))
    }

    /// Devices with a mailbox now.
    pub(crate) fn len(&self) -> usize {
        self.lock().boxes.len()
    }
}

/// Records `n` lost messages for `user`, whose device learns of them on its return.
fn add_gap<const N: usize>(inner: &mut Inner<N>, user: &UserId, n: u64) {
    if let Ok(mailbox) = mailbox_for(inner, user) {
        mailbox.dropped = mailbox.dropped.saturating_add(n);
    }
}

/// `user`'s mailbox, made if it has none. When the table is full, a mailbox holding only a
/// gap count gives its slot up (its device then does not learn of that gap); else refused.
fn mailbox_for<'i, const N: usize>(
    inner: &'i mut Inner<N>,
    user: &UserId,
) -> Result<&'i mut Mailbox, NotKept> {
    let index = match inner.boxes.get_index_of(user.as_str()) {
        Some(index) => index,
        None => {
            let most = match inner.limits.mailboxes {
                0 => N,
                max => max.min(N),
            };
            if inner.boxes.len() >= most {
                let gap_only = inner
                    .boxes
                    .iter()
                    .find(|(_, m)| m.messages.is_empty())
                    .map(|(id, _)| id.clone());
                match gap_only {
                    Some(id) => {
                        inner.boxes.swap_remove(id.as_str());
                    }
                    None => return Err(NotKept::MailboxesFull),
                }
            }
            if inner
                .boxes
                .insert(user.clone(), Mailbox::default())
                .is_err()
            {
                return Err(NotKept::MailboxesFull);
            }
            inner.boxes.len() - 1
        }
    };
    inner
        .boxes
        .get_index_mut(index)
        .map(|(_, mailbox)| mailbox)
        .ok_or(NotKept::MailboxesFull)
}

fn add_signed(cell: &AtomicU64, delta: i64) {
    if delta >= 0 {
        cell.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
    } else {
        cell.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::ack::{AckSlot, Outcome};
    use crate::wire::mailbox_file;

    const MAX: usize = usize::MAX;

    fn budget(limit: usize) -> &'static Budget {
        let b: &'static Budget = Box::leak(Box::new(Budget::new()));
        b.set_limit(limit);
        b
    }

    fn uid(s: &str) -> UserId {
        UserId::try_from(s).unwrap()
    }

    fn boxes(messages: usize, bytes: usize, mailboxes: usize) -> Mailboxes<8> {
        let m = Mailboxes::<8>::new();
        m.configure(MailboxLimits {
            messages,
            bytes,
            ttl_ms: 60_000,
            mailboxes,
        });
        m
    }

    fn push(b: &'static Budget, text: &str, ack: Option<crate::hub::ack::Ack>) -> Outbound {
        Outbound {
            frame: text.to_owned().into(),
            ack,
            charge: b.empty(),
            source: Source::Push,
        }
    }

    fn queue() -> QueueLimits {
        QueueLimits {
            frames: 4,
            bytes: MAX,
        }
    }

    /// The frames a session registering now would write first, and its registration.
    fn drain(
        m: &Mailboxes<8>,
        devices: &DeviceTable<8>,
        user: &str,
        b: &'static Budget,
        now: u64,
    ) -> (Vec<String>, Registration) {
        let reg = m
            .register(devices, &uid(user), false, queue(), b, now)
            .unwrap();
        let mut batch = Vec::new();
        reg.link.take(&mut batch, 100);
        let texts = batch.iter().map(|o| o.frame.as_str().to_owned()).collect();
        (texts, reg)
    }

    #[test]
    fn away_messages_come_back_in_order_after_a_gap_frame_for_those_dropped() {
        let b = budget(MAX);
        let (m, devices) = (boxes(3, MAX, 0), DeviceTable::<8>::new());
        let slot = AckSlot::new(5);
        for i in 0..5 {
            let item = push(b, &format!("m{i}"), slot.ack(i));
            assert!(matches!(
                m.deliver_or_keep(&devices, &uid("d"), item, 1000 + i as u64),
                Routed::Kept
            ));
        }
        assert!((0..5).all(|i| slot.outcome(i) == Outcome::Kept));
        let stats = m.stats();
        assert_eq!((stats.messages, stats.bytes, stats.kept), (3, 6, 5));
        assert_eq!(stats.dropped[Dropped::Count as usize], ("count", 2));
        let (texts, reg) = drain(&m, &devices, "d", b, 2000);
        assert_eq!(texts, [gap_frame(2).as_str(), "m2", "m3", "m4"]);
        assert_eq!(m.stats().messages, 0);
        assert_eq!(m.len(), 0);
        // Connected now: a push is queued, not kept.
        let item = push(b, "live", None);
        assert!(matches!(
            m.deliver_or_keep(&devices, &uid("d"), item, 3000),
            Routed::Queued
        ));
        drop(reg);
    }

    /// Panics unwind (Cargo.toml): a panic while the deliver-or-keep lock is held poisons it,
    /// and the mailbox must go on keeping messages and handing them back in order.
    #[test]
    fn a_panic_inside_the_lock_leaves_the_mailbox_keeping() {
        let b = budget(MAX);
        let (m, devices) = (
            std::sync::Arc::new(boxes(10, MAX, 0)),
            DeviceTable::<8>::new(),
        );
        m.deliver_or_keep(&devices, &uid("d"), push(b, "before", None), 1);
        let poisoner = std::sync::Arc::clone(&m);
        let died = std::thread::spawn(move || {
            let _guard = poisoner.inner.lock();
            panic!("a bug inside a critical section");
        })
        .join();
        assert!(died.is_err());
        assert!(m.inner.is_poisoned());
        assert!(matches!(
            m.deliver_or_keep(&devices, &uid("d"), push(b, "after", None), 2),
            Routed::Kept
        ));
        assert_eq!((m.stats().messages, m.len()), (2, 1));
        let (texts, reg) = drain(&m, &devices, "d", b, 3);
        assert_eq!(texts, ["before", "after"]);
        assert_eq!((m.stats().messages, m.len()), (0, 0));
        assert!(matches!(
            m.deliver_or_keep(&devices, &uid("d"), push(b, "live", None), 4),
            Routed::Queued
        ));
        drop(reg);
    }

    #[test]
    fn the_byte_cap_drops_the_oldest_and_a_frame_over_it_is_not_kept() {
        let b = budget(MAX);
        let (m, devices) = (boxes(100, 10, 0), DeviceTable::<8>::new());
        for text in ["aaaa", "bbbb", "cccc"] {
            m.deliver_or_keep(&devices, &uid("d"), push(b, text, None), 1);
        }
        let slot = AckSlot::new(1);
        let too_big = push(b, "0123456789x", slot.ack(0));
        assert!(matches!(
            m.deliver_or_keep(&devices, &uid("d"), too_big, 1),
            Routed::NotKept
        ));
        assert_eq!(slot.outcome(0), Outcome::NotKept(NotKept::TooLarge));
        let (texts, _reg) = drain(&m, &devices, "d", b, 2);
        assert_eq!(texts, [gap_frame(1).as_str(), "bbbb", "cccc"]);
        assert_eq!(m.stats().dropped[Dropped::Bytes as usize].1, 1);
        assert_eq!(m.stats().not_kept[NotKept::TooLarge.index()].1, 1);
    }

    #[test]
    fn messages_past_their_age_are_dropped_never_delivered() {
        let b = budget(MAX);
        let (m, devices) = (boxes(10, MAX, 0), DeviceTable::<8>::new());
        m.deliver_or_keep(&devices, &uid("d"), push(b, "old", None), 1_000);
        m.deliver_or_keep(&devices, &uid("d"), push(b, "new", None), 50_000);
        m.deliver_or_keep(&devices, &uid("e"), push(b, "e-old", None), 1_000);
        // The sweep frees the memory of devices that stay away.
        m.sweep(61_001);
        assert_eq!(m.stats().messages, 1);
        assert_eq!(m.stats().dropped[Dropped::Ttl as usize].1, 2);
        // Delivery checks the age too.
        let (texts, _reg) = drain(&m, &devices, "d", b, 110_001);
        assert_eq!(texts, [gap_frame(2).as_str()]);
        let (texts, _reg) = drain(&m, &devices, "e", b, 110_001);
        assert_eq!(texts, [gap_frame(1).as_str()]);
    }

    #[test]
    fn a_full_table_refuses_new_devices_but_a_gap_only_mailbox_gives_its_slot() {
        let b = budget(MAX);
        let (m, devices) = (boxes(1, MAX, 1), DeviceTable::<8>::new());
        m.deliver_or_keep(&devices, &uid("a"), push(b, "1", None), 1);
        let slot = AckSlot::new(1);
        assert!(matches!(
            m.deliver_or_keep(&devices, &uid("b"), push(b, "x", slot.ack(0)), 1),
            Routed::NotKept
        ));
        assert_eq!(slot.outcome(0), Outcome::NotKept(NotKept::MailboxesFull));
        // "a" holds only a gap count once its message expired.
        m.sweep(100_000);
        assert!(matches!(
            m.deliver_or_keep(&devices, &uid("b"), push(b, "2", None), 100_000),
            Routed::Kept
        ));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_refused_duplicate_takes_nothing_and_a_replacement_carries_the_old_queue() {
        let b = budget(MAX);
        let (m, devices) = (boxes(10, MAX, 0), DeviceTable::<8>::new());
        m.deliver_or_keep(&devices, &uid("d"), push(b, "k1", None), 1);
        let first = m
            .register(&devices, &uid("d"), false, queue(), b, 2)
            .unwrap();
        // The mailbox is empty while the device is connected.
        assert_eq!(m.len(), 0);
        assert!(matches!(
            m.register(&devices, &uid("d"), false, queue(), b, 2),
            Err(RegisterError::Duplicate)
        ));
        // The first session took "k1" and got a push it has not taken yet.
        first.link.push(push(b, "p1", None)).unwrap();
        let second = m
            .register(&devices, &uid("d"), true, queue(), b, 3)
            .unwrap();
        assert!(first.link.is_kicked());
        assert!(first.link.has_ended());
        let mut batch = Vec::new();
        second.link.take(&mut batch, 10);
        let texts: Vec<&str> = batch.iter().map(|o| o.frame.as_str()).collect();
        assert_eq!(texts, ["k1", "p1"]);
        // The replaced session's late leave hands nothing over.
        m.leave(&devices, &uid("d"), first.session, &first.link, 4);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_session_that_leaves_hands_back_what_it_had_not_taken() {
        let b = budget(MAX);
        let (m, devices) = (boxes(10, MAX, 0), DeviceTable::<8>::new());
        m.deliver_or_keep(&devices, &uid("d"), push(b, "k1", None), 1);
        m.deliver_or_keep(&devices, &uid("d"), push(b, "k2", None), 2);
        let reg = m
            .register(&devices, &uid("d"), false, queue(), b, 3)
            .unwrap();
        let mut batch = Vec::new();
        // "k1" goes out; "k2" is still in the backlog when the device drops off again.
        reg.link.take(&mut batch, 1);
        let slot = AckSlot::new(1);
        reg.link.push(push(b, "p1", slot.ack(0))).unwrap();
        let send = Outbound {
            source: Source::Send,
            ..push(b, "s1", None)
        };
        reg.link.push(send).unwrap();
        m.leave(&devices, &uid("d"), reg.session, &reg.link, 40_000);
        assert_eq!(slot.outcome(0), Outcome::Kept);
        assert_eq!(m.stats().messages, 2);
        // "k2" keeps its first time: it expires before "p1".
        let (texts, _reg) = drain(&m, &devices, "d", b, 60_500);
        assert_eq!(texts, [gap_frame(1).as_str(), "p1"]);
    }

    #[test]
    fn live_work_takes_the_oldest_kept_messages_first() {
        let b = budget(4 * kept_bytes(2));
        let (m, devices) = (boxes(10, MAX, 0), DeviceTable::<8>::new());
        let keep = |user: &str, text: &str, at: u64| {
            m.deliver_or_keep(&devices, &uid(user), push(b, text, None), at)
        };
        keep("a", "a1", 1);
        keep("b", "b1", 2);
        keep("a", "a2", 3);
        keep("b", "b2", 4);
        // The budget is full: a new message is refused, never making room for itself.
        assert!(matches!(keep("c", "c1", 5), Routed::NotKept));
        let freed = m.give_way(kept_bytes(2) + 1);
        assert_eq!(freed, 2 * kept_bytes(2));
        assert_eq!(m.stats().dropped[Dropped::Budget as usize].1, 2);
        let (texts, _a) = drain(&m, &devices, "a", b, 10);
        assert_eq!(texts, [gap_frame(1).as_str(), "a2"]);
        let (texts, _b) = drain(&m, &devices, "b", b, 10);
        assert_eq!(texts, [gap_frame(1).as_str(), "b2"]);
        // Asked for more than it holds, it drops nothing.
        keep("c", "c1", 11);
        assert_eq!(m.give_way(usize::MAX), 0);
        assert_eq!(m.stats().messages, 1);
    }

    #[test]
    fn what_is_saved_is_restored_under_the_limits_of_the_day() {
        let b = budget(MAX);
        let (m, devices) = (boxes(10, MAX, 0), DeviceTable::<8>::new());
        let ids = ["\u{85}c1", "été", "a b"];
        for id in ids {
            for n in 0..3 {
                let text = format!("{{\"{id}\":{n}}}");
                m.deliver_or_keep(&devices, &uid(id), push(b, &text, None), 1000 + n);
            }
        }
        // The oldest of all (the first device's first) gives way before the save.
        m.give_way(1);
        let mut w = mailbox_file::Writer::new(Vec::new()).unwrap();
        assert_eq!(m.save(&mut w).unwrap(), (3, 8));
        let file = w.finish().unwrap();

        let fresh = boxes(2, MAX, 0);
        let mut r = Reader::new(&file[..], file.len() as u64).unwrap();
        assert_eq!(fresh.restore(&mut r, b, 2000).unwrap(), 6);
        let (texts, _r) = drain(&fresh, &devices, ids[0], b, 2001);
        assert_eq!(
            texts,
            [
                gap_frame(1).as_str(),
                "{\"\u{85}c1\":1}",
                "{\"\u{85}c1\":2}"
            ]
        );
        // Three saved, the smaller cap keeps the last two.
        let (texts, _r) = drain(&fresh, &devices, ids[2], b, 2001);
        assert_eq!(texts[0], gap_frame(1));
        assert_eq!(texts.len(), 3);
    }
}

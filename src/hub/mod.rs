//! Shared state: imports `wire`, reads `ops` for settings and limits; never `app` or `net`.
//!
//! Everything connection tasks share sits behind one [`Hub`]: the device table (each device's
//! bounded queue and signals), the offline mailbox of devices that are away, the table of open
//! `/sse/send` streams, the delivery acknowledgements, the counters and the shutdown signal.
//! The hub holds queues, never sockets.

pub(crate) mod ack;
pub(crate) mod budget;
#[cfg(feature = "cluster")]
pub(crate) mod cluster;
pub(crate) mod counter;
pub(crate) mod devices;
pub(crate) mod ids;
pub(crate) mod link;
pub(crate) mod mailbox;
pub(crate) mod metrics;
pub(crate) mod origins;
pub(crate) mod streams;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use crate::ops::limits::DEVICE_TABLE_CAPACITY;
use crate::ops::settings::{Config, OnDuplicate};
use crate::wire::envelope::UserId;
use budget::Budget;
use devices::{DeviceHandle, DeviceTable, RegisterError, Registration};
use link::{DeviceLink, Outbound, PushError, QueueLimits};
use mailbox::{MailboxLimits, Mailboxes, Routed};
use metrics::Metrics;
pub(crate) use streams::Streams;

/// The device table. A `static` so its slots sit in `.bss` and cost RSS only when used.
static DEVICES: DeviceTable<DEVICE_TABLE_CAPACITY> = DeviceTable::new();
/// The table of open `/sse/send` streams.
static STREAMS: Streams = Streams::new();
/// The process's counters.
static METRICS: Metrics = Metrics::new();
/// The process's memory budget.
static BUDGET: Budget = Budget::new();
/// The offline mailbox: as many mailboxes as the device table has slots, at most.
static MAILBOXES: Mailboxes<DEVICE_TABLE_CAPACITY> = Mailboxes::new();

/// The device table of this build.
pub(crate) type Devices = DeviceTable<DEVICE_TABLE_CAPACITY>;
/// The mailbox table of this build.
pub(crate) type Mailbox = Mailboxes<DEVICE_TABLE_CAPACITY>;

/// What the budget asks to give way when live work does not fit: kept messages.
fn mailbox_gives_way(bytes: usize) -> usize {
    MAILBOXES.give_way(bytes)
}

/// Shared by all tasks of one daemon.
pub(crate) struct Hub {
    /// Effective settings.
    pub config: Config,
    /// Connected devices.
    pub devices: &'static Devices,
    /// Open `/sse/send` streams.
    pub streams: &'static Streams,
    /// The counters behind `/metrics`.
    pub metrics: &'static Metrics,
    /// The one account of the bytes traffic makes the daemon hold.
    pub budget: &'static Budget,
    /// Messages kept for devices that are away.
    pub mailbox: &'static Mailbox,
    /// When the daemon started.
    pub started: Instant,
    /// Flips to `true` once, when shutdown begins.
    pub shutdown: watch::Receiver<bool>,
    /// TCP connections open now (HTTP and WebSocket).
    pub open_connections: AtomicUsize,
    /// Outcome of the latest self-check (watchdog and `/health`).
    pub healthy: AtomicBool,
    /// The other nodes of the cluster, when `cluster_urls` is set.
    #[cfg(feature = "cluster")]
    pub cluster: Option<std::sync::Arc<dyn cluster::Remote>>,
}

impl Hub {
    /// The process's hub for `config` and a memory budget of `budget_bytes`, with the
    /// tables' runtime limits applied. The tables are the process's own, so a process runs
    /// one hub.
    pub(crate) fn new(config: Config, budget_bytes: u64, shutdown: watch::Receiver<bool>) -> Hub {
        DEVICES.set_max(config.max_connections);
        STREAMS.set_max(config.max_pending_sends);
        BUDGET.set_limit(usize::try_from(budget_bytes).unwrap_or(usize::MAX));
        MAILBOXES.configure(MailboxLimits {
            messages: config.mailbox_messages,
            bytes: config.mailbox_bytes,
            ttl_ms: config.mailbox_ttl_secs.saturating_mul(1000),
            mailboxes: config.max_connections,
        });
        if MAILBOXES.is_on() {
            BUDGET.set_give_way(mailbox_gives_way);
        }
        Hub {
            config,
            devices: &DEVICES,
            streams: &STREAMS,
            metrics: &METRICS,
            budget: &BUDGET,
            mailbox: &MAILBOXES,
            started: Instant::now(),
            shutdown,
            open_connections: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }

    /// True once shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whole seconds since start.
    pub(crate) fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// True when `name` is a configured public account.
    pub(crate) fn is_public(&self, name: &str) -> bool {
        self.config.public_accounts.iter().any(|a| a == name)
    }

    /// True when a new user id should replace a connected one.
    pub(crate) fn replace_duplicates(&self) -> bool {
        self.config.on_duplicate == OnDuplicate::Replace
    }

    /// What may wait for one device's socket.
    pub(crate) fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            frames: self.config.queue_depth,
            bytes: self.config.queue_bytes,
        }
    }

    /// Registers a device session for `user` (docs/protocol.md §8.4); with the mailbox on,
    /// what it kept for the device is put in front of the session's queue (§20.4).
    pub(crate) fn register(&self, user: &UserId) -> Result<Registration, RegisterError> {
        let (replace, queue) = (self.replace_duplicates(), self.queue_limits());
        if self.mailbox.is_on() {
            let now = mailbox::now_ms();
            self.mailbox
                .register(self.devices, user, replace, queue, self.budget, now)
        } else {
            self.devices.register(user, replace, queue)
        }
    }

    /// A device session ends: it leaves the table; with the mailbox on, the frames it had
    /// not taken are kept for the device's return.
    pub(crate) fn leave(&self, user: &UserId, session: u64, link: &DeviceLink) {
        if self.mailbox.is_on() {
            let now = mailbox::now_ms();
            self.mailbox.leave(self.devices, user, session, link, now);
        } else {
            self.devices.unregister(user, session);
        }
    }

    /// Queues `item` for `user`'s session (`device`, when the caller looked it up already),
    /// or, with the mailbox on and no session, keeps it. Never waits.
    // Always inlined: as a call of its own it cost the live push path some 15 instructions
    // (scripts/profile-push.sh, BENCHMARKS.md "The offline mailbox").
    #[inline(always)]
    pub(crate) fn deliver(
        &self,
        user: &UserId,
        device: Option<DeviceHandle>,
        item: Outbound,
    ) -> Routed {
        // The live path, inlined where pushes are made: the mailbox costs it nothing.
        let item = match device.or_else(|| self.devices.get(user)) {
            Some(device) => match device.link.try_push(item) {
                Ok(()) => return Routed::Queued,
                Err((PushError::Full, _)) => return Routed::Full,
                Err((PushError::Ended, item)) => item,
            },
            None => item,
        };
        self.deliver_away(user, item)
    }

    /// `deliver` for a device found away (or gone since it was looked up).
    #[inline(never)]
    fn deliver_away(&self, user: &UserId, item: Outbound) -> Routed {
        if self.mailbox.is_on() {
            // Decided again under the mailbox's lock: the device may be registering.
            self.mailbox
                .deliver_or_keep(self.devices, user, item, mailbox::now_ms())
        } else {
            Routed::NotConnected
        }
    }

    /// What one `/sse/send` stream may buffer for its upstream.
    pub(crate) fn stream_limits(&self) -> streams::StreamLimits {
        streams::StreamLimits {
            answers: self.config.queue_depth,
            bytes: self.config.stream_buffer_bytes,
        }
    }

    /// Whether the self-check passed last time.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Resolves once shutdown has begun (or the signal task is gone, which also means stop).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The returned `Ref` is dropped here: it is not `Send` and must not live across an await.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

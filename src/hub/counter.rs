//! Counters and gauges: the atomics every table of figures is made of (`metrics`, the
//! budget's refusals).

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// One monotonically increasing counter.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero (const, for `static`s).
    pub(crate) const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    /// Adds one.
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (things in progress now).
#[derive(Default)]
pub(crate) struct Gauge(AtomicU64);

impl Gauge {
    /// A gauge at zero (const, for `static`s).
    pub(crate) const fn new() -> Self {
        Gauge(AtomicU64::new(0))
    }
    /// One more in progress; the returned guard counts it out when dropped.
    pub(crate) fn enter(&self) -> InProgress<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        InProgress(self)
    }
    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts one thing in progress on a [`Gauge`] for as long as it lives.
pub(crate) struct InProgress<'g>(&'g Gauge);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A counter family for Prometheus text: name, help, label name (empty: no label), and its
/// (label value, counter) series.
pub(crate) type Family<'c> = (
    &'static str,
    &'static str,
    &'static str,
    &'c [(&'static str, &'c Counter)],
);

/// Appends `families` in Prometheus text, each with its HELP and TYPE lines.
pub(crate) fn write_families(out: &mut Vec<u8>, families: &[Family<'_>]) {
    for (name, help, label, series) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, counter) in *series {
            if label.is_empty() {
                let _ = writeln!(out, "{name} {}", counter.get());
            } else {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", counter.get());
            }
        }
    }
}

/// Appends `"name":{"label":n,...}` to a JSON document: a labelled series of `/metrics`.
pub(crate) fn write_json_series<'l>(
    out: &mut Vec<u8>,
    name: &str,
    series: impl IntoIterator<Item = (&'l str, u64)>,
) {
    let _ = write!(out, "\"{name}\":{{");
    for (i, (label, n)) in series.into_iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}\"{label}\":{n}");
    }
    out.push(b'}');
}

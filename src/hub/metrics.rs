//! Process-wide counters behind `/metrics` (the original server's JSON plus counters,
//! docs/protocol.md §11).

use super::budget::{Budget, Use};
use super::counter::{write_families, write_json_series, Counter, Family, Gauge};

/// Every counter the daemon keeps.
#[derive(Default)]
pub(crate) struct Metrics {
    /// TCP connections accepted.
    pub connections_accepted: Counter,
    /// TCP connections refused at once because too many were open.
    pub connections_refused: Counter,
    /// WebSocket sessions registered.
    pub devices_connected: Counter,
    /// Upgrades closed with 1008 because the user id was connected.
    pub devices_refused_duplicate: Counter,
    /// Upgrades closed with 1013 because the table was full.
    pub devices_refused_full: Counter,
    /// Sessions ended because no pong came in time (or a write stalled).
    pub heartbeat_timeouts: Counter,
    /// Sessions of dead peers ended with a TCP reset, freeing their unsendable data.
    pub dead_peers_reset: Counter,
    /// Push frames written to a device's socket.
    pub pushes_delivered: Counter,
    /// Pushes answered `partial`: the device was not connected or left first.
    pub pushes_not_connected: Counter,
    /// Pushes refused with 503 because the device's queue was full.
    pub pushes_queue_full: Counter,
    /// Pushes rerouted by an `@mention`.
    pub pushes_rerouted: Counter,
    /// Text frames received from devices.
    pub frames_in: Counter,
    /// Bytes of text frames received from devices.
    pub bytes_in: Counter,
    /// Frames written to devices.
    pub frames_out: Counter,
    /// Bytes of frames written to devices.
    pub bytes_out: Counter,
    /// `/sse/send` streams opened.
    pub sends_opened: Counter,
    /// Streams ended by a final message.
    pub sends_final: Counter,
    /// Streams ended by `send_timeout_secs`.
    pub sends_timeout: Counter,
    /// Streams ended because the device left or was never there.
    pub sends_device_gone: Counter,
    /// Streams ended because the upstream left.
    pub sends_upstream_gone: Counter,
    /// Streams ended by shutdown.
    pub sends_shutdown: Counter,
    /// Streams ended because their upstream did not take the device's answers fast enough.
    pub sends_too_slow: Counter,
    /// Streams ended because a device's answer did not fit the memory budget.
    pub sends_over_budget: Counter,
    /// Requests from a browser page of an origin not in `cors_allowed_origins` (docs/protocol.md §17.4).
    pub origins_refused_cors: Counter,
    /// WebSocket upgrades refused with 403 because their `Origin` is not in `allowed_origins`.
    pub origins_refused_websocket: Counter,
    /// HTTP requests whose head was read and whose answer is not complete yet (open
    /// `/sse/send` streams included).
    pub(crate) requests_in_progress: Gauge,
    /// HTTP responses by status class (index 0 = 1xx … 4 = 5xx).
    pub http_responses: [Counter; 5],
    /// The TLS listener's handshakes, reloads and certificate.
    #[cfg(feature = "tls")]
    pub tls: TlsMetrics,
}

impl Metrics {
    /// All counters at zero (const, for `static`s).
    pub(crate) const fn new() -> Self {
        Metrics {
            connections_accepted: Counter::new(),
            connections_refused: Counter::new(),
            devices_connected: Counter::new(),
            devices_refused_duplicate: Counter::new(),
            devices_refused_full: Counter::new(),
            heartbeat_timeouts: Counter::new(),
            dead_peers_reset: Counter::new(),
            pushes_delivered: Counter::new(),
            pushes_not_connected: Counter::new(),
            pushes_queue_full: Counter::new(),
            pushes_rerouted: Counter::new(),
            frames_in: Counter::new(),
            bytes_in: Counter::new(),
            frames_out: Counter::new(),
            bytes_out: Counter::new(),
            sends_opened: Counter::new(),
            sends_final: Counter::new(),
            sends_timeout: Counter::new(),
            sends_device_gone: Counter::new(),
            sends_upstream_gone: Counter::new(),
            sends_shutdown: Counter::new(),
            sends_too_slow: Counter::new(),
            sends_over_budget: Counter::new(),
            origins_refused_cors: Counter::new(),
            origins_refused_websocket: Counter::new(),
            requests_in_progress: Gauge::new(),
            http_responses: [
                Counter::new(),
                Counter::new(),
                Counter::new(),
                Counter::new(),
                Counter::new(),
            ],
            #[cfg(feature = "tls")]
            tls: TlsMetrics::new(),
        }
    }

    /// Counts one response with `status`.
    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).saturating_sub(1);
        if let Some(c) = self.http_responses.get(class) {
            c.inc();
        }
    }

    /// The counters as `(json_name, value)` pairs, in a stable order.
    pub(crate) fn counters(&self) -> [(&'static str, u64); 23] {
        [
            ("connections_accepted", self.connections_accepted.get()),
            ("connections_refused", self.connections_refused.get()),
            ("devices_connected_total", self.devices_connected.get()),
            (
                "devices_refused_duplicate",
                self.devices_refused_duplicate.get(),
            ),
            ("devices_refused_full", self.devices_refused_full.get()),
            ("heartbeat_timeouts", self.heartbeat_timeouts.get()),
            ("dead_peers_reset", self.dead_peers_reset.get()),
            ("pushes_delivered", self.pushes_delivered.get()),
            ("pushes_not_connected", self.pushes_not_connected.get()),
            ("pushes_queue_full", self.pushes_queue_full.get()),
            ("pushes_rerouted", self.pushes_rerouted.get()),
            ("frames_in", self.frames_in.get()),
            ("bytes_in", self.bytes_in.get()),
            ("frames_out", self.frames_out.get()),
            ("bytes_out", self.bytes_out.get()),
            ("sends_opened", self.sends_opened.get()),
            ("sends_final", self.sends_final.get()),
            ("sends_timeout", self.sends_timeout.get()),
            ("sends_device_gone", self.sends_device_gone.get()),
            ("sends_upstream_gone", self.sends_upstream_gone.get()),
            ("sends_shutdown", self.sends_shutdown.get()),
            ("sends_too_slow", self.sends_too_slow.get()),
            ("sends_over_budget", self.sends_over_budget.get()),
        ]
    }
}

/// What the offline mailbox holds now and has done (docs/protocol.md §20.6, in `/metrics` §11).
#[derive(Debug, Default, Clone)]
pub(crate) struct MailboxStats {
    /// Messages kept now.
    pub messages: u64,
    /// Bytes of frames kept now.
    pub bytes: u64,
    /// Messages kept so far.
    pub kept: u64,
    /// Kept messages written to their device so far.
    pub delivered: u64,
    /// Kept messages dropped so far, by reason (label, count).
    pub dropped: Vec<(&'static str, u64)>,
    /// Undelivered messages the mailbox did not keep, by reason (label, count).
    pub not_kept: Vec<(&'static str, u64)>,
}

/// Appends the `/metrics` JSON: the original server's fields, then every counter, then the
/// memory budget, then the offline mailbox.
pub(crate) fn write_json(
    out: &mut Vec<u8>,
    m: &Metrics,
    budget: &Budget,
    mailbox: &MailboxStats,
    active: usize,
    pending: usize,
    uptime_secs: u64,
) {
    use std::io::Write;
    let _ = write!(
        out,
        "{{\"active_connections\":{active},\"service\":\"websocket-sse-server\",\"pending_sends\":{pending},\"uptime_seconds\":{uptime_secs}"
    );
    for (name, value) in m.counters() {
        let _ = write!(out, ",\"{name}\":{value}");
    }
    let _ = write!(
        out,
        ",\"origins_refused\":{{\"cors\":{},\"websocket\":{}}}",
        m.origins_refused_cors.get(),
        m.origins_refused_websocket.get()
    );
    let _ = write!(
        out,
        ",\"requests_in_progress\":{}",
        m.requests_in_progress.get()
    );
    let _ = write!(out, ",\"http_responses\":{{");
    for (i, c) in m.http_responses.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}\"{}xx\":{}", i + 1, c.get());
    }
    let _ = write!(
        out,
        "}},\"memory_budget_bytes\":{},\"memory_used_bytes\":{},\"memory_used_peak_bytes\":{},",
        budget.limit(),
        budget.used(),
        budget.peak()
    );
    let refused = Use::ALL
        .iter()
        .map(|what| (what.label(), budget.refused(*what)));
    write_json_series(out, "memory_refused", refused);
    let _ = write!(
        out,
        ",\"mailbox_held_messages\":{},\"mailbox_held_bytes\":{},\"mailbox_kept\":{},\"mailbox_delivered\":{},",
        mailbox.messages, mailbox.bytes, mailbox.kept, mailbox.delivered
    );
    write_json_series(out, "mailbox_dropped", mailbox.dropped.iter().copied());
    out.push(b',');
    write_json_series(out, "mailbox_not_kept", mailbox.not_kept.iter().copied());
    #[cfg(feature = "tls")]
    m.tls.write_json(out);
    out.push(b'}');
}

/// `Content-Type` of the Prometheus text exposition format.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends the Prometheus text exposition of every counter.
pub(crate) fn write_prometheus(
    out: &mut Vec<u8>,
    m: &Metrics,
    budget: &Budget,
    mailbox: &MailboxStats,
    active: usize,
    pending: usize,
    uptime_secs: u64,
) {
    use std::io::Write;
    let gauge = |out: &mut Vec<u8>, name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        out,
        "wssed_devices_connected",
        "Devices connected now.",
        active as u64,
    );
    gauge(
        out,
        "wssed_send_streams_open",
        "/sse/send streams open now.",
        pending as u64,
    );
    gauge(
        out,
        "wssed_requests_in_progress",
        "HTTP requests read and not answered completely yet.",
        m.requests_in_progress.get(),
    );
    gauge(
        out,
        "wssed_uptime_seconds",
        "Seconds since the daemon started.",
        uptime_secs,
    );
    gauge(
        out,
        "wssed_memory_budget_bytes",
        "Bytes traffic may make the daemon hold (the memory budget).",
        budget.limit() as u64,
    );
    gauge(
        out,
        "wssed_memory_used_bytes",
        "Bytes of the memory budget in use now.",
        budget.used() as u64,
    );
    gauge(
        out,
        "wssed_memory_used_peak_bytes",
        "The most bytes of the memory budget in use at once since start.",
        budget.peak() as u64,
    );
    let _ = writeln!(
        out,
        "# HELP wssed_memory_refused_total Work refused because it did not fit the memory budget, by what it was for.\n# TYPE wssed_memory_refused_total counter"
    );
    for &what in Use::ALL {
        let _ = writeln!(
            out,
            "wssed_memory_refused_total{{reason=\"{}\"}} {}",
            what.label(),
            budget.refused(what)
        );
    }
    gauge(
        out,
        "wssed_mailbox_held_messages",
        "Messages the offline mailbox keeps now for devices that are away.",
        mailbox.messages,
    );
    gauge(
        out,
        "wssed_mailbox_held_bytes",
        "Bytes of frames the offline mailbox keeps now.",
        mailbox.bytes,
    );
    let counter =
        |out: &mut Vec<u8>, name: &str, help: &str, label: &str, series: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (value_label, n) in series {
                if label.is_empty() {
                    let _ = writeln!(out, "{name} {n}");
                } else {
                    let _ = writeln!(out, "{name}{{{label}=\"{value_label}\"}} {n}");
                }
            }
        };
    counter(
        out,
        "wssed_mailbox_kept_total",
        "Messages the offline mailbox kept for devices that were away.",
        "",
        &[("", mailbox.kept)],
    );
    counter(
        out,
        "wssed_mailbox_delivered_total",
        "Kept messages written to their device when it came back.",
        "",
        &[("", mailbox.delivered)],
    );
    counter(
        out,
        "wssed_mailbox_dropped_total",
        "Kept messages dropped before their device came back, by reason.",
        "reason",
        &mailbox.dropped,
    );
    counter(
        out,
        "wssed_mailbox_not_kept_total",
        "Undelivered messages the offline mailbox did not keep, by reason.",
        "reason",
        &mailbox.not_kept,
    );
    if let Some(rss) = resident_bytes() {
        gauge(
            out,
            "wssed_resident_memory_bytes",
            "Resident set size of the process.",
            rss,
        );
    }
    let families: [Family<'_>; 12] = [
        (
            "wssed_connections_accepted_total",
            "TCP connections accepted.",
            "",
            &[("", &m.connections_accepted)],
        ),
        (
            "wssed_connections_refused_total",
            "Connections or upgrades refused, by reason.",
            "reason",
            &[
                ("too_many_connections", &m.connections_refused),
                ("duplicate_user", &m.devices_refused_duplicate),
                ("table_full", &m.devices_refused_full),
            ],
        ),
        (
            "wssed_device_sessions_total",
            "WebSocket sessions registered.",
            "",
            &[("", &m.devices_connected)],
        ),
        (
            "wssed_pushes_total",
            "Push frames by outcome.",
            "outcome",
            &[
                ("delivered", &m.pushes_delivered),
                ("not_connected", &m.pushes_not_connected),
                ("queue_full", &m.pushes_queue_full),
            ],
        ),
        (
            "wssed_queue_full_total",
            "Deliveries refused because a device's queue was full.",
            "",
            &[("", &m.pushes_queue_full)],
        ),
        (
            "wssed_pushes_rerouted_total",
            "Messages rerouted by an @mention.",
            "",
            &[("", &m.pushes_rerouted)],
        ),
        (
            "wssed_frames_total",
            "WebSocket text frames by direction.",
            "direction",
            &[("in", &m.frames_in), ("out", &m.frames_out)],
        ),
        (
            "wssed_frame_bytes_total",
            "Bytes of WebSocket text frames by direction.",
            "direction",
            &[("in", &m.bytes_in), ("out", &m.bytes_out)],
        ),
        (
            "wssed_send_streams_ended_total",
            "/sse/send streams ended, by reason.",
            "reason",
            &[
                ("final", &m.sends_final),
                ("timeout", &m.sends_timeout),
                ("device_gone", &m.sends_device_gone),
                ("upstream_gone", &m.sends_upstream_gone),
                ("shutdown", &m.sends_shutdown),
                ("too_slow", &m.sends_too_slow),
                ("over_budget", &m.sends_over_budget),
            ],
        ),
        (
            "wssed_origins_refused_total",
            "Browser origins refused, by the check that refused them.",
            "check",
            &[
                ("cors", &m.origins_refused_cors),
                ("websocket", &m.origins_refused_websocket),
            ],
        ),
        (
            "wssed_heartbeat_timeouts_total",
            "Sessions ended by a missing pong or a stalled write.",
            "",
            &[("", &m.heartbeat_timeouts)],
        ),
        (
            "wssed_dead_peers_reset_total",
            "Sessions of dead peers closed with a TCP reset, freeing their unsent data.",
            "",
            &[("", &m.dead_peers_reset)],
        ),
    ];
    write_families(out, &families);
    #[cfg(feature = "tls")]
    m.tls.write_prometheus(out);
    let _ = writeln!(out, "# HELP wssed_send_streams_opened_total /sse/send streams opened.\n# TYPE wssed_send_streams_opened_total counter\nwssed_send_streams_opened_total {}", m.sends_opened.get());
    let _ = writeln!(out, "# HELP wssed_http_responses_total HTTP responses by status class.\n# TYPE wssed_http_responses_total counter");
    for (i, c) in m.http_responses.iter().enumerate() {
        let _ = writeln!(
            out,
            "wssed_http_responses_total{{class=\"{}xx\"}} {}",
            i + 1,
            c.get()
        );
    }
}

/// Why a TLS handshake failed (`/metrics` `tls.handshake_failures`, Prometheus `reason`).
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// Not done within `tls_handshake_timeout_secs` (a slow or silent client).
    Timeout,
    /// The client closed or reset the connection during the handshake.
    Closed,
    /// A plain HTTP request arrived on the TLS port (answered 400).
    PlainHttp,
    /// The first bytes were neither a TLS handshake nor HTTP.
    NotTls,
    /// Malformed or unexpected TLS messages.
    Protocol,
    /// No protocol version, cipher suite or key exchange in common.
    Incompatible,
    /// The client refused the certificate (an alert such as `unknown_ca`, `bad_certificate`,
    /// `certificate_expired`).
    CertificateRejected,
    /// Another alert from the client, or another failure.
    Other,
    /// The handshake's buffers did not fit the memory budget: refused before it began.
    OverBudget,
}

#[cfg(feature = "tls")]
impl HandshakeFailure {
    /// Every reason, in the order of the counters.
    pub(crate) const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::PlainHttp,
        HandshakeFailure::NotTls,
        HandshakeFailure::Protocol,
        HandshakeFailure::Incompatible,
        HandshakeFailure::CertificateRejected,
        HandshakeFailure::Other,
        HandshakeFailure::OverBudget,
    ];

    /// The label of its counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::PlainHttp => "plain_http",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::CertificateRejected => "certificate_rejected",
            HandshakeFailure::Other => "other",
            HandshakeFailure::OverBudget => "over_budget",
        }
    }
}

/// The TLS listener's counters and the certificate it serves.
#[cfg(feature = "tls")]
pub(crate) struct TlsMetrics {
    /// Handshakes completed.
    pub handshakes: Counter,
    /// Handshakes failed, by reason (the order of [`HandshakeFailure::ALL`]).
    failures: [Counter; HandshakeFailure::ALL.len()],
    /// Certificate reloads (SIGHUP) that took effect.
    pub reloads: Counter,
    /// Certificate reloads that failed (the certificate in use was kept).
    pub reload_failures: Counter,
    /// The certificate served; `None` while TLS is off.
    cert: std::sync::Mutex<Option<crate::ops::tls::CertInfo>>,
}

#[cfg(feature = "tls")]
impl Default for TlsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tls")]
impl TlsMetrics {
    const fn new() -> TlsMetrics {
        TlsMetrics {
            handshakes: Counter::new(),
            failures: [const { Counter::new() }; HandshakeFailure::ALL.len()],
            reloads: Counter::new(),
            reload_failures: Counter::new(),
            cert: std::sync::Mutex::new(None),
        }
    }

    /// Counts a failed handshake.
    pub(crate) fn failed(&self, why: HandshakeFailure) {
        if let Some(c) = self.failures.get(why as usize) {
            c.inc();
        }
    }

    /// Handshakes failed for `why` so far.
    pub(crate) fn failures(&self, why: HandshakeFailure) -> u64 {
        self.failures.get(why as usize).map_or(0, Counter::get)
    }

    /// Records the certificate now served.
    pub(crate) fn serving(&self, info: crate::ops::tls::CertInfo) {
        // A poisoned lock only means a panic elsewhere held it; the value is still whole.
        let mut cert = self
            .cert
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cert = Some(info);
    }

    fn cert(&self) -> Option<crate::ops::tls::CertInfo> {
        self.cert
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Appends `,"tls":{...}` to the `/metrics` JSON, when TLS is on.
    fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let Some(cert) = self.cert() else {
            return;
        };
        let _ = write!(out, ",\"tls\":{{\"handshakes\":{},", self.handshakes.get());
        let failures = HandshakeFailure::ALL
            .iter()
            .map(|why| (why.label(), self.failures(*why)));
        write_json_series(out, "handshake_failures", failures);
        let _ = write!(
            out,
            ",\"reloads\":{},\"reload_failures\":{},\"certificate_subject\":",
            self.reloads.get(),
            self.reload_failures.get()
        );
        crate::wire::json::write_string(out, &cert.subject);
        let _ = write!(
            out,
            ",\"certificate_not_after\":{},\"certificate_expires_in_seconds\":{}}}",
            cert.not_after,
            cert.expires_in_secs(crate::ops::tls::unix_now())
        );
    }

    /// Appends the TLS families to the Prometheus text, when TLS is on.
    fn write_prometheus(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let Some(cert) = self.cert() else {
            return;
        };
        let subject = cert
            .subject
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(
            out,
            "# HELP wssed_tls_certificate_expiry_seconds Seconds until the served certificate expires (negative: expired).\n# TYPE wssed_tls_certificate_expiry_seconds gauge\nwssed_tls_certificate_expiry_seconds{{subject=\"{subject}\"}} {}",
            cert.expires_in_secs(crate::ops::tls::unix_now())
        );
        let _ = writeln!(
            out,
            "# HELP wssed_tls_certificate_not_after_seconds When the served certificate expires, in seconds since the Unix epoch.\n# TYPE wssed_tls_certificate_not_after_seconds gauge\nwssed_tls_certificate_not_after_seconds{{subject=\"{subject}\"}} {}",
            cert.not_after
        );
        let _ = writeln!(
            out,
            "# HELP wssed_tls_handshakes_total TLS handshakes completed.\n# TYPE wssed_tls_handshakes_total counter\nwssed_tls_handshakes_total {}",
            self.handshakes.get()
        );
        let _ = writeln!(
            out,
            "# HELP wssed_tls_handshake_failures_total TLS handshakes failed, by reason.\n# TYPE wssed_tls_handshake_failures_total counter"
        );
        for why in HandshakeFailure::ALL {
            let _ = writeln!(
                out,
                "wssed_tls_handshake_failures_total{{reason=\"{}\"}} {}",
                why.label(),
                self.failures(why)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wssed_tls_reloads_total Certificate reloads on SIGHUP, by outcome.\n# TYPE wssed_tls_reloads_total counter\nwssed_tls_reloads_total{{outcome=\"ok\"}} {}\nwssed_tls_reloads_total{{outcome=\"failed\"}} {}",
            self.reloads.get(),
            self.reload_failures.get()
        );
    }
}

/// Resident set size from `/proc/self/statm`, when the system has it.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

/// Page size assumed for `/proc/self/statm` (4 KiB on every board we ship for).
const PAGE_BYTES: u64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_seed_fields_and_counters() {
        let m = Metrics::new();
        m.pushes_delivered.add(3);
        m.response(404);
        let budget = Budget::new();
        budget.set_limit(1000);
        let mut out = Vec::new();
        let mailbox = MailboxStats {
            messages: 4,
            dropped: vec![("ttl", 2)],
            not_kept: vec![("too_large", 1), ("in_flight", 0)],
            ..MailboxStats::default()
        };
        write_json(&mut out, &m, &budget, &mailbox, 2, 1, 9);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["mailbox_held_messages"], 4);
        assert_eq!(v["mailbox_dropped"]["ttl"], 2);
        assert_eq!(v["mailbox_not_kept"]["too_large"], 1);
        assert_eq!(v["memory_refused"]["mailbox"], 0);
        let mut text = Vec::new();
        write_prometheus(&mut text, &m, &budget, &mailbox, 2, 1, 9);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("\nwssed_mailbox_held_messages 4\n"), "{text}");
        assert!(text.contains("\nwssed_mailbox_dropped_total{reason=\"ttl\"} 2\n"));
        assert!(text.contains("\nwssed_memory_refused_total{reason=\"mailbox\"} 0\n"));
        assert_eq!(v["active_connections"], 2);
        assert_eq!(v["service"], "websocket-sse-server");
        assert_eq!(v["pushes_delivered"], 3);
        assert_eq!(v["http_responses"]["4xx"], 1);
        assert_eq!(v["uptime_seconds"], 9);
        assert_eq!(v["memory_budget_bytes"], 1000);
        assert_eq!(v["memory_used_bytes"], 0);
        assert_eq!(v["memory_refused"]["frame"], 0);
        assert_eq!(v["origins_refused"]["cors"], 0);
    }

    /// Panics unwind (Cargo.toml): a panic while the certificate record is locked poisons it,
    /// and `/metrics` must go on reporting, and a reload on recording, the certificate.
    #[cfg(feature = "tls")]
    #[test]
    fn a_panic_inside_the_certificate_lock_leaves_tls_metrics_reporting() {
        let info = |subject: &str| crate::ops::tls::CertInfo {
            subject: subject.to_owned(),
            not_after: 2_000_000_000,
            chain_len: 1,
            chain_bytes: 600,
        };
        let m = std::sync::Arc::new(TlsMetrics::new());
        m.serving(info("CN=old"));
        let poisoner = std::sync::Arc::clone(&m);
        let died = std::thread::spawn(move || {
            let _guard = poisoner.cert.lock();
            panic!("a bug inside a critical section");
        })
        .join();
        assert!(died.is_err());
        assert!(m.cert.is_poisoned());
        assert_eq!(m.cert(), Some(info("CN=old")));
        m.serving(info("CN=new"));
        assert_eq!(m.cert(), Some(info("CN=new")));
        let mut out = vec![b'{', b'"', b'a', b'"', b':', b'0'];
        m.write_json(&mut out);
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["tls"]["certificate_subject"], "CN=new", "{v}");
    }

    /// The example of docs/protocol.md §11.1 has every member the writer writes, nested
    /// ones too, and no other (the build-dependent `memory_refused` labels aside).
    #[test]
    fn the_protocol_json_example_has_the_members_written() {
        fn members(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
            if let Some(map) = v.as_object() {
                for (k, v) in map {
                    let here = format!("{path}/{k}");
                    members(v, &here, out);
                    out.push(here);
                }
            }
        }
        let doc = include_str!("../../docs/protocol.md");
        let example = doc
            .split_once("### 11.1 JSON")
            .and_then(|(_, rest)| rest.split_once("```json\n"))
            .and_then(|(_, rest)| rest.split_once("\n```"))
            .map(|(json, _)| json)
            .unwrap_or_default();
        let documented: serde_json::Value = serde_json::from_str(example).unwrap_or_default();
        let mut out = Vec::new();
        write_json(
            &mut out,
            &Metrics::new(),
            &Budget::new(),
            &crate::hub::mailbox::Mailboxes::<2>::new().stats(),
            0,
            0,
            0,
        );
        let written: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        let (mut want, mut have) = (Vec::new(), Vec::new());
        members(&written, "", &mut want);
        members(&documented, "", &mut have);
        want.retain(|m| !["/memory_refused/tls", "/memory_refused/remote"].contains(&m.as_str()));
        want.sort();
        have.sort();
        assert!(!want.is_empty());
        assert_eq!(have, want);
    }

    #[test]
    fn refused_origins_are_one_family_with_a_label_per_check() {
        let m = Metrics::new();
        m.origins_refused_cors.add(2);
        m.origins_refused_websocket.inc();
        let mut out = Vec::new();
        write_prometheus(
            &mut out,
            &m,
            &Budget::new(),
            &MailboxStats::default(),
            0,
            0,
            0,
        );
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.contains("# TYPE wssed_origins_refused_total counter\n"));
        assert!(text.contains("wssed_origins_refused_total{check=\"cors\"} 2\n"));
        assert!(text.contains("wssed_origins_refused_total{check=\"websocket\"} 1\n"));
        let mut out = Vec::new();
        write_json(
            &mut out,
            &m,
            &Budget::new(),
            &MailboxStats::default(),
            0,
            0,
            0,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["origins_refused"]["cors"], 2);
        assert_eq!(v["origins_refused"]["websocket"], 1);
    }
}

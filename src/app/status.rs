//! `/health`, `/metrics`, `/devices` and the status page (docs/protocol.md §10, §11, §18): what
//! an operator or a device asks of the daemon itself.

use std::fmt::Write as _;
use std::io::Write;

use crate::hub::{metrics, Hub};
use crate::wire::envelope::UserId;
use crate::wire::http::response::{self, Persist};
use crate::wire::json;

/// Most device ids one `/devices` answer lists (about 130 KiB of JSON at most).
pub(crate) const MAX_LISTED_DEVICES: usize = 1024;

/// The status page: one self-contained HTML file (inline style and script, nothing fetched
/// but `/health`, `/metrics` and `/devices`), built into the binary.
pub(crate) const PAGE: &str = include_str!("status_page.html");

/// The page's Content-Security-Policy: nothing but its own inline style and script (by hash,
/// so no injected markup can run) and requests to its own origin. A unit test keeps the
/// hashes those of the file.
pub(crate) const PAGE_CSP: &str = "default-src 'none'; \
    script-src 'sha256-GapdMNRXAZZDjlRb6JwD+V9fLrcZZmmYKg72fnAuvOg='; style-src 'sha256-CP+JB7uYgj++XIb/6uLmvGrSChIa75WWaLM5SaRufro='; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Appends the status page (`GET /`, when `status_page` is on); returns its status.
pub(crate) fn page(out: &mut Vec<u8>, persist: Persist, head_only: bool) -> u16 {
    response::write_head(
        out,
        200,
        Some("text/html; charset=utf-8"),
        Some(PAGE.len()),
        persist,
        &[
            ("Cache-Control", "no-cache"),
            ("Content-Security-Policy", PAGE_CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ],
    );
    if !head_only {
        out.extend_from_slice(PAGE.as_bytes());
    }
    200
}

/// Appends the `/devices` answer: how many devices are connected and the ids of at most
/// `MAX_LISTED_DEVICES` of them, sorted (docs/protocol.md §18.2). The caller has checked the
/// token. The body goes straight into `out`, which the caller pays for like any large answer.
pub(crate) fn devices(hub: &Hub, out: &mut Vec<u8>, persist: Persist, head_only: bool) -> u16 {
    let mut ids: Vec<UserId> = Vec::with_capacity(hub.devices.len().min(MAX_LISTED_DEVICES));
    let count = hub.devices.ids(&mut ids, MAX_LISTED_DEVICES);
    ids.sort_unstable();
    let mut head = String::new();
    let _ = write!(head, "{{\"count\":{count},\"devices\":[");
    let tail = format!("],\"truncated\":{}}}", ids.len() < count);
    let quoted: usize = ids.iter().map(|id| json::escaped_len(id) + 2).sum();
    let len = head.len() + quoted + ids.len().saturating_sub(1) + tail.len();
    response::write_head(
        out,
        200,
        Some("application/json"),
        Some(len),
        persist,
        &[("Cache-Control", "no-store")],
    );
    if head_only {
        return 200;
    }
    out.reserve_exact(len);
    out.extend_from_slice(head.as_bytes());
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        json::write_string_contents(out, id);
        out.push(b'"');
    }
    out.extend_from_slice(tail.as_bytes());
    200
}

/// Appends the `/health` answer; returns its status (503 while the self-check fails).
pub(crate) fn health(
    hub: &Hub,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    persist: Persist,
    head_only: bool,
) -> u16 {
    let healthy = hub.is_healthy();
    scratch.clear();
    let _ = write!(
        scratch,
        "{{\"status\":\"{}\",\"connections\":{},\"uptime\":\"running\",\"uptime_seconds\":{}",
        if healthy { "healthy" } else { "unhealthy" },
        hub.devices.len(),
        hub.uptime_secs()
    );
    // The cluster's state is shown, never judged: the self-check does not depend on NATS.
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &hub.cluster {
        crate::hub::cluster::write_health(scratch, &cluster.status());
    }
    scratch.push(b'}');
    let (status, extra): (u16, &[(&str, &str)]) = if healthy {
        (200, &[])
    } else {
        (503, &[("Retry-After", "1")])
    };
    response::write_json(out, status, scratch, persist, extra, head_only);
    status
}

/// Appends the `/metrics` answer, JSON or Prometheus text; returns its status.
pub(crate) fn metrics(
    hub: &Hub,
    prometheus: bool,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    persist: Persist,
    head_only: bool,
) -> u16 {
    scratch.clear();
    let (devices, streams, uptime) = (hub.devices.len(), hub.streams.len(), hub.uptime_secs());
    let mailbox = hub.mailbox.stats();
    let write = if prometheus {
        metrics::write_prometheus
    } else {
        metrics::write_json
    };
    write(
        scratch,
        hub.metrics,
        hub.budget,
        &mailbox,
        devices,
        streams,
        uptime,
    );
    if prometheus {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &hub.cluster {
            crate::hub::cluster::write_prometheus(
                scratch,
                &cluster.status(),
                &crate::hub::cluster::COUNTERS,
            );
        }
        response::write_head(
            out,
            200,
            Some(metrics::PROMETHEUS_CONTENT_TYPE),
            Some(scratch.len()),
            persist,
            &[],
        );
        if !head_only {
            out.extend_from_slice(scratch);
        }
    } else {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &hub.cluster {
            // Inside the object: its closing brace is the last byte.
            scratch.pop();
            crate::hub::cluster::write_json(
                scratch,
                &cluster.status(),
                &crate::hub::cluster::COUNTERS,
            );
            scratch.push(b'}');
        }
        response::write_json(out, 200, scratch, persist, &[], head_only);
    }
    200
}

/// True when the request asks for Prometheus text: `?format=prometheus`, or an `Accept`
/// naming `text/plain` or `application/openmetrics-text` (docs/protocol.md §11.2).
pub(crate) fn wants_prometheus(query: Option<&str>, accept: Option<&[u8]>) -> bool {
    let by_query = query.is_some_and(|q| q.split('&').any(|p| p == "format=prometheus"));
    let by_accept = accept.is_some_and(|a| {
        let a = a.to_ascii_lowercase();
        contains(&a, b"text/plain") || contains(&a, b"application/openmetrics-text")
    });
    by_query || by_accept
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// The text between `open` and the next `close` in the page.
    fn inline(open: &str, close: &str) -> &'static str {
        let start = PAGE.find(open).map(|i| i + open.len());
        let text = start.and_then(|s| PAGE.get(s..).map(|rest| (s, rest)));
        match text.and_then(|(s, rest)| rest.find(close).map(|n| &PAGE[s..s + n])) {
            Some(t) => t,
            None => panic!("the status page has no {open}...{close}"),
        }
    }

    fn csp_hash(text: &str) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let digest = Sha256::digest(text.as_bytes());
        let mut out = String::new();
        for chunk in digest.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        format!("'sha256-{out}'")
    }

    #[test]
    fn the_policy_names_the_hashes_of_the_inline_script_and_style() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script");
        assert_eq!(PAGE.matches("<style").count(), 1, "one inline style");
        let script = csp_hash(inline("<script>", "</script>"));
        let style = csp_hash(inline("<style>", "</style>"));
        assert!(
            PAGE_CSP.contains(&format!("script-src {script};")),
            "script-src {script} expected in PAGE_CSP"
        );
        assert!(
            PAGE_CSP.contains(&format!("style-src {style};")),
            "style-src {style} expected in PAGE_CSP"
        );
    }

    #[test]
    fn the_page_is_small_and_self_contained() {
        assert!(PAGE.len() < 16 * 1024, "{} bytes", PAGE.len());
        for outside in ["http://", "https://", "//cdn", "src=", "@import", "url("] {
            assert!(!PAGE.contains(outside), "the page refers to {outside}");
        }
        for kept in ["localStorage", "document.cookie", "innerHTML", "eval("] {
            assert!(!PAGE.contains(kept), "the page uses {kept}");
        }
    }
}

//! `/health` and `/metrics` (docs/protocol.md §10, §11): what an operator or a device asks of the
//! daemon itself.

use std::io::Write;

use crate::hub::{metrics, Hub};
use crate::wire::http::response::{self, Persist};

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
        "{{\"status\":\"{}\",\"connections\":{},\"uptime\":\"running\",\"uptime_seconds\":{}}}",
        if healthy { "healthy" } else { "unhealthy" },
        hub.devices.len(),
        hub.uptime_secs()
    );
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
    if prometheus {
        metrics::write_prometheus(scratch, hub.metrics, hub.budget, devices, streams, uptime);
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
        metrics::write_json(scratch, hub.metrics, hub.budget, devices, streams, uptime);
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

//! Which browser pages may read the answers (docs/protocol.md §17): the policy of
//! `cors_allowed_origins`, and the count and log of every refused `Origin`, the CORS ones and
//! the WebSocket upgrades refused by `allowed_origins`.

use super::error::ApiError;
use super::route::Request;
use crate::hub::origins::{self, Check};
use crate::hub::Hub;
use crate::wire::cors;
use crate::wire::http::parse::RequestHead;

/// Decides what a request's `Origin` earns: puts the CORS header lines its answer carries
/// into `lines` (empty: none, today's answers exactly), and counts and logs a refused origin.
///
/// - No `Origin` (curl, upstream services, devices, same-origin `GET`s): nothing.
/// - `/ws`: no CORS; an upgrade refused for its `Origin` is counted.
/// - An origin listed in `cors_allowed_origins` (ASCII case-insensitive): the allow fields,
///   the preflight ones for `OPTIONS`.
/// - Any other origin: no allow field (the browser keeps the answer from the page), counted;
///   unless it is the server's own (a page served at `/`), which is not counted.
/// - `Vary: Origin` on every answer to a request with an `Origin` while CORS is on.
pub(crate) fn apply(head: &RequestHead<'_>, request: &Request, hub: &Hub, lines: &mut Vec<u8>) {
    lines.clear();
    let Some(origin) = head.origin.map(<[u8]>::trim_ascii) else {
        return;
    };
    if head.path == "/ws" {
        if let Some(Err(ApiError::OriginRefused)) = request.upgrade {
            origins::refused(hub, Check::WebSocket, origin);
        }
        return;
    }
    let listed = &hub.config.cors_allowed_origins;
    if listed
        .iter()
        .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
    {
        cors::write_allowed(lines, origin, request.preflight());
        return;
    }
    if !cors::is_same_origin(origin, head.host) {
        origins::refused(hub, Check::Cors, origin);
    }
    if !listed.is_empty() {
        cors::write_vary(lines);
    }
}

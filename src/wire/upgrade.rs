//! `/ws` upgrade checks (docs/protocol.md §8.1, §8.3), sans-IO: our parser's head in, a validated
//! upgrade or the one reason it is refused out. The WebSocket protocol itself is
//! tokio-tungstenite's.

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::auth;
use super::envelope::{is_id_control, UserId};
use super::http::parse::{query_pairs, RequestHead};

/// A validated upgrade request.
#[derive(Debug)]
pub(crate) struct Upgrade {
    /// The device's user id, percent-decoded.
    pub user_id: UserId,
    /// `Sec-WebSocket-Accept` for the answer.
    pub accept: String,
}

/// What an upgrade must satisfy beyond the protocol: the operator's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy<'c> {
    /// Origins allowed to upgrade; empty allows any.
    pub allowed_origins: &'c [String],
    /// Key of the HMAC device token, when devices must present one.
    pub ws_secret: Option<&'c str>,
}

/// Why an upgrade is refused; each maps to one answer (`app::error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a WebSocket upgrade (426).
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` other than 13 (426).
    Version,
    /// A well-framed upgrade the route cannot use (400), with the reason.
    BadRequest(&'static str),
    /// `Origin` not in `allowed_origins` (403).
    Origin,
    /// Missing or wrong device token (401).
    Unauthorized,
}

/// Checks an upgrade request in the order of docs/protocol.md §8.3: upgrade headers (426), key
/// (400), `user_id` (400), `Origin` (403), token (401).
pub(crate) fn check(head: &RequestHead<'_>, policy: Policy<'_>) -> Result<Upgrade, Refusal> {
    if !head.upgrade_websocket {
        return Err(Refusal::NotAnUpgrade);
    }
    if head.ws_version.map(<[u8]>::trim_ascii) != Some(b"13".as_slice()) {
        return Err(Refusal::Version);
    }
    let key = match head.ws_key.map(<[u8]>::trim_ascii) {
        Some(k) if !k.is_empty() => k,
        _ => return Err(Refusal::BadRequest("Missing Sec-WebSocket-Key")),
    };
    let user_id = user_id_from_query(head.query)?;
    if !policy.allowed_origins.is_empty() {
        if let Some(origin) = head.origin {
            let allowed = policy
                .allowed_origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.trim_ascii()));
            if !allowed {
                return Err(Refusal::Origin);
            }
        }
    }
    if let Some(secret) = policy.ws_secret {
        let token = token_from_request(head.query, head.authorization)?;
        if !auth::device_token_matches(secret.as_bytes(), &user_id, token.as_bytes()) {
            return Err(Refusal::Unauthorized);
        }
    }
    Ok(Upgrade {
        user_id,
        accept: derive_accept_key(key),
    })
}

/// The single `user_id` query parameter, decoded and validated (1–64 bytes, no control chars).
///
/// One pass checks decoding, repetition and the value together because docs/protocol.md §8.3
/// answers the first failure from the left; this is the only "at most once" parameter check.
fn user_id_from_query(query: Option<&str>) -> Result<UserId, Refusal> {
    let mut found: Option<UserId> = None;
    for pair in query_pairs(query.unwrap_or("")) {
        let (key, value) = pair.map_err(|e| Refusal::BadRequest(e.detail()))?;
        if key != "user_id" {
            continue;
        }
        if found.is_some() {
            return Err(Refusal::BadRequest("user_id given more than once"));
        }
        if value.is_empty() || value.chars().any(is_id_control) {
            return Err(Refusal::BadRequest("Invalid user_id"));
        }
        let id = UserId::try_from(value.as_ref())
            .map_err(|_| Refusal::BadRequest("user_id is longer than 64 bytes"))?;
        found = Some(id);
    }
    found.ok_or(Refusal::BadRequest("Missing user_id query parameter"))
}

/// The device token: the `token` query parameter, else `Authorization: Bearer`.
fn token_from_request(
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> Result<String, Refusal> {
    for pair in query_pairs(query.unwrap_or("")) {
        let (key, value) = pair.map_err(|e| Refusal::BadRequest(e.detail()))?;
        if key == "token" {
            return Ok(value.into_owned());
        }
    }
    authorization
        .and_then(auth::bearer_token)
        .and_then(|t| std::str::from_utf8(t).ok())
        .map(str::to_owned)
        .ok_or(Refusal::Unauthorized)
}

/// Appends the 101 answer.
pub(crate) fn write_switching_protocols(out: &mut Vec<u8>, upgrade: &Upgrade) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(upgrade.accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

//! Every refusal the daemon can answer with, each mapped to exactly one status and body.

use crate::hub::streams::OpenError;
use crate::wire::envelope::ValidationErrors;
use crate::wire::http::error::HttpError;
use crate::wire::http::response::{self, Persist};
use crate::wire::json;
use crate::wire::listed::listed;
use crate::wire::upgrade::Refusal;

listed! {
    /// Why a frame did not reach its device.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Undelivered {
        /// Not connected, or gone before the write.
        NotConnected,
        /// The device's queue is full.
        QueueFull,
        /// The frame did not fit the memory budget.
        OverBudget,
        /// The device is not here and the other nodes of the cluster cannot be asked (the
        /// link to NATS is down, or the device's node did not answer in time).
        #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
        ClusterUnavailable,
    }
}

impl Undelivered {
    /// The batch result's `error` value.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Undelivered::NotConnected => "not_connected",
            Undelivered::QueueFull => "queue_full",
            Undelivered::OverBudget => "over_budget",
            Undelivered::ClusterUnavailable => "cluster_unavailable",
        }
    }

    /// The human text: a push's `message`, a stream's closing event.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Undelivered::NotConnected => "User not connected",
            Undelivered::QueueFull => "User queue full",
            Undelivered::OverBudget => "Memory budget exhausted",
            Undelivered::ClusterUnavailable => "Cluster unavailable",
        }
    }
}

/// A refused request. `write` renders its one answer on the wire.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A framing or head error found by the parser (400, 413, 414, 431, 505).
    Http(HttpError),
    /// HTTP/1.1 request without `Host` (400; the connection stays open).
    MissingHost,
    /// A well-framed request the route cannot use (400), e.g. an upgrade without a key.
    BadRequest(&'static str),
    /// Missing or wrong bearer token or device token (401).
    Unauthorized,
    /// Upgrade from an origin not in `allowed_origins` (403).
    OriginRefused,
    /// `/devices` while `api_token` is unset: the list is never shown anonymously (403).
    DeviceListOff,
    /// Unknown path (404).
    NotFound,
    /// Known path, wrong method (405); carries the path's `Allow` list.
    MethodNotAllowed(&'static str),
    /// A request head not complete within `header_timeout_secs` (408).
    HeadTimeout,
    /// A request body that stopped arriving (408).
    BodyTimeout,
    /// `/sse/send` with a correlation id already waiting (409).
    CorrelationInUse,
    /// POST without `Content-Length` or chunked framing (411).
    LengthRequired,
    /// A body whose `Content-Type` is not JSON (415).
    UnsupportedMediaType,
    /// An invalid message (422); carries the FastAPI-shaped body, rendered when found.
    Invalid(Vec<u8>),
    /// `/ws` without a WebSocket upgrade (426).
    UpgradeRequired,
    /// `/ws` upgrade with a `Sec-WebSocket-Version` other than 13 (426).
    WebSocketVersion,
    /// The target device's outbound queue is full (503).
    QueueFull,
    /// `max_pending_sends` streams are open (503).
    TooManySends,
    /// Too many TCP connections are open (503).
    TooManyConnections,
    /// The work does not fit the memory budget now (503).
    OverBudget,
    /// A plain HTTP request on the TLS port (400; the connection closes).
    #[cfg(feature = "tls")]
    PlainHttpOnTls,
    /// The device is not here and the cluster cannot be asked where it is (503).
    ClusterUnavailable,
}

impl ApiError {
    /// The status code of the answer.
    pub(crate) fn status(&self) -> u16 {
        match self {
            ApiError::Http(e) => e.status(),
            ApiError::MissingHost | ApiError::BadRequest(_) => 400,
            #[cfg(feature = "tls")]
            ApiError::PlainHttpOnTls => 400,
            ApiError::Unauthorized => 401,
            ApiError::OriginRefused | ApiError::DeviceListOff => 403,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::HeadTimeout | ApiError::BodyTimeout => 408,
            ApiError::CorrelationInUse => 409,
            ApiError::LengthRequired => 411,
            ApiError::UnsupportedMediaType => 415,
            ApiError::Invalid(_) => 422,
            ApiError::UpgradeRequired | ApiError::WebSocketVersion => 426,
            ApiError::QueueFull
            | ApiError::TooManySends
            | ApiError::TooManyConnections
            | ApiError::OverBudget
            | ApiError::ClusterUnavailable => 503,
        }
    }

    /// True when the connection must close after the answer (its framing can't be trusted).
    pub(crate) fn closes_connection(&self) -> bool {
        match self {
            ApiError::Http(e) => e.closes_connection(),
            ApiError::HeadTimeout
            | ApiError::BodyTimeout
            | ApiError::LengthRequired
            | ApiError::TooManyConnections => true,
            #[cfg(feature = "tls")]
            ApiError::PlainHttpOnTls => true,
            _ => false,
        }
    }

    /// Heap bytes the refusal holds itself (a 422's rendered body).
    pub(crate) fn held_bytes(&self) -> usize {
        match self {
            ApiError::Invalid(body) => body.capacity(),
            _ => 0,
        }
    }

    /// Appends the whole response to a request that asked for a body; returns its status.
    pub(crate) fn answer(&self, out: &mut Vec<u8>, persist: Persist) -> u16 {
        self.write(out, persist, false);
        self.status()
    }

    /// Appends the whole response; `head_only` for an answer to HEAD.
    pub(crate) fn write(&self, out: &mut Vec<u8>, persist: Persist, head_only: bool) {
        let persist = if self.closes_connection() {
            Persist::Close
        } else {
            persist
        };
        let status = self.status();
        match self {
            ApiError::Invalid(body) => {
                response::write_json(out, status, body, persist, &[], head_only);
            }
            // The push answer's shape (docs/protocol.md §5.2), as the original server sent it.
            ApiError::QueueFull | ApiError::OverBudget | ApiError::ClusterUnavailable => {
                let mut body = Vec::with_capacity(96);
                body.extend_from_slice(br#"{"status":"error","message":"#);
                json::write_string(&mut body, self.detail());
                if matches!(self, ApiError::ClusterUnavailable) {
                    // The batch item's code too, for callers that branch on it.
                    body.extend_from_slice(br#","error":"cluster_unavailable""#);
                }
                body.push(b'}');
                let retry = [("Retry-After", "1")];
                response::write_json(out, status, &body, persist, &retry, head_only);
            }
            ApiError::MethodNotAllowed(allow) => response::write_error(
                out,
                status,
                "Method Not Allowed",
                persist,
                &[("Allow", allow)],
                head_only,
            ),
            ApiError::UpgradeRequired => response::write_error(
                out,
                status,
                "WebSocket upgrade required",
                persist,
                &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
                head_only,
            ),
            ApiError::WebSocketVersion => response::write_error(
                out,
                status,
                "Unsupported WebSocket version",
                persist,
                &[("Sec-WebSocket-Version", "13")],
                head_only,
            ),
            ApiError::TooManySends | ApiError::TooManyConnections => response::write_error(
                out,
                status,
                self.detail(),
                persist,
                &[("Retry-After", "1")],
                head_only,
            ),
            // RFC 9110 §11.6.1: a 401 names the scheme that would be accepted.
            ApiError::Unauthorized => response::write_error(
                out,
                status,
                self.detail(),
                persist,
                &[("WWW-Authenticate", "Bearer")],
                head_only,
            ),
            _ => response::write_error(out, status, self.detail(), persist, &[], head_only),
        }
    }

    /// The human text of a `{"detail": ...}` answer.
    pub(crate) fn detail(&self) -> &'static str {
        match self {
            ApiError::Http(e) => e.detail(),
            ApiError::MissingHost => "Missing Host header",
            ApiError::BadRequest(why) => why,
            ApiError::Unauthorized => "Not authenticated",
            ApiError::OriginRefused => "Origin not allowed",
            ApiError::DeviceListOff => "The device list needs api_token to be set",
            ApiError::NotFound => "Not Found",
            ApiError::MethodNotAllowed(_) => "Method Not Allowed",
            ApiError::HeadTimeout => "Request head timed out",
            ApiError::BodyTimeout => "Request body timed out",
            ApiError::CorrelationInUse => "Correlation id already in use",
            ApiError::LengthRequired => "Length Required",
            ApiError::UnsupportedMediaType => "Content-Type must be application/json",
            ApiError::Invalid(_) => "Invalid message",
            ApiError::UpgradeRequired => "WebSocket upgrade required",
            ApiError::WebSocketVersion => "Unsupported WebSocket version",
            ApiError::QueueFull => "User queue full",
            ApiError::TooManySends => "Too many open send streams",
            ApiError::TooManyConnections => "Too many connections",
            ApiError::OverBudget => "Memory budget exhausted",
            #[cfg(feature = "tls")]
            ApiError::PlainHttpOnTls => "Plain HTTP request sent to the TLS port",
            ApiError::ClusterUnavailable => "Cluster unavailable",
        }
    }
}

impl From<ValidationErrors<'_>> for ApiError {
    fn from(errors: ValidationErrors<'_>) -> Self {
        let mut body = Vec::with_capacity(128);
        errors.write_json(&mut body);
        ApiError::Invalid(body)
    }
}

impl From<OpenError> for ApiError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::InUse => ApiError::CorrelationInUse,
            OpenError::Full => ApiError::TooManySends,
        }
    }
}

impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> Self {
        ApiError::Http(e)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotAnUpgrade => ApiError::UpgradeRequired,
            Refusal::Version => ApiError::WebSocketVersion,
            Refusal::BadRequest(why) => ApiError::BadRequest(why),
            Refusal::Origin => ApiError::OriginRefused,
            Refusal::Unauthorized => ApiError::Unauthorized,
        }
    }
}

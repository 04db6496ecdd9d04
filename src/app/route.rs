//! What a request head asks for: (method, path) -> endpoint, and the refusals decided before
//! its body is read. No I/O.

use super::error::ApiError;
use crate::ops::settings::Config;
use crate::wire::auth;
use crate::wire::http::body::check_content_length;
use crate::wire::http::parse::{is_json_content_type, BodyFraming, Method, RequestHead, Version};
use crate::wire::upgrade::{self, Upgrade};

/// The daemon's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /ws`: device WebSocket upgrade.
    Ws,
    /// `GET /health`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `POST /sse/push`.
    Push,
    /// `POST /sse/push/batch`.
    Batch,
    /// `POST /sse/send`.
    Send,
    /// `GET /`: the status page, when `status_page` is on.
    Page,
    /// `GET /devices`: the ids of the connected devices, for `api_token` holders.
    Devices,
    /// `POST /__fault/stall`: blocks the event loop (test builds only).
    #[cfg(feature = "fault-injection")]
    FaultStall,
}

/// What to do with a routed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Serve the endpoint.
    Serve(Endpoint),
    /// Serve a GET endpoint's head only.
    Head(Endpoint),
    /// Answer 204 with the path's `Allow`.
    Options(&'static str),
}

const ALLOW_GET: &str = "GET, HEAD, OPTIONS";
const ALLOW_POST: &str = "POST, OPTIONS";

impl Endpoint {
    /// The endpoint at `path`, if any.
    pub(crate) fn at(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/ws" => Endpoint::Ws,
            "/health" => Endpoint::Health,
            "/metrics" => Endpoint::Metrics,
            "/sse/push" => Endpoint::Push,
            "/sse/push/batch" => Endpoint::Batch,
            "/sse/send" => Endpoint::Send,
            "/" => Endpoint::Page,
            "/devices" => Endpoint::Devices,
            #[cfg(feature = "fault-injection")]
            "/__fault/stall" => Endpoint::FaultStall,
            _ => return None,
        })
    }

    /// True for the upstream endpoints under `/sse/` (POST, token-protected).
    pub(crate) fn is_upstream(self) -> bool {
        matches!(self, Endpoint::Push | Endpoint::Batch | Endpoint::Send)
    }

    /// True for endpoints served to POST.
    pub(crate) fn is_post(self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self == Endpoint::FaultStall {
            return true;
        }
        self.is_upstream()
    }

    /// The `Allow` header value for this endpoint's path.
    pub(crate) fn allow(self) -> &'static str {
        if self.is_post() {
            ALLOW_POST
        } else {
            ALLOW_GET
        }
    }
}

/// Routes a request: 404 before 405 (docs/protocol.md §2.3).
pub(crate) fn route(method: Method, path: &str) -> Result<Action, ApiError> {
    let endpoint = Endpoint::at(path).ok_or(ApiError::NotFound)?;
    match (method, endpoint.is_post()) {
        (Method::Options, _) => Ok(Action::Options(endpoint.allow())),
        (Method::Post, true) | (Method::Get, false) => Ok(Action::Serve(endpoint)),
        (Method::Head, false) => Ok(Action::Head(endpoint)),
        _ => Err(ApiError::MethodNotAllowed(endpoint.allow())),
    }
}

/// What a request head said, copied out of the read buffer so that the buffer can move on.
pub(crate) struct Request {
    action: Result<Action, ApiError>,
    /// The method was HEAD: every answer goes without its body, errors included (a body would
    /// be read as the start of the next response on a keep-alive connection).
    pub head_only: bool,
    /// The request's HTTP version.
    pub version: Version,
    /// The client wants the connection kept open.
    pub keep_alive: bool,
    has_host: bool,
    framing: BodyFraming,
    json_body: bool,
    authorized: bool,
    token_set: bool,
    /// `/metrics` is asked for in Prometheus text.
    pub prometheus: bool,
    /// For `/ws`: the checked upgrade, or why it is refused.
    pub upgrade: Option<Result<Upgrade, ApiError>>,
}

impl Request {
    /// Reads everything the rest of the request needs out of `head`.
    pub(crate) fn new(head: &RequestHead<'_>, config: &Config) -> Request {
        // With the page off, `/` is what it always was: an unknown path.
        let action = if head.path == "/" && !config.status_page {
            Err(ApiError::NotFound)
        } else {
            route(head.method, head.path)
        };
        let upgrade = match action {
            Ok(Action::Serve(Endpoint::Ws)) => Some(
                upgrade::check(
                    head,
                    upgrade::Policy {
                        allowed_origins: &config.allowed_origins,
                        ws_secret: config.ws_secret.as_deref(),
                    },
                )
                .map_err(ApiError::from),
            ),
            _ => None,
        };
        let authorized = match (&config.api_token, head.authorization) {
            (None, _) => true,
            (Some(token), Some(value)) => auth::bearer_matches(value, token.as_bytes()),
            (Some(_), None) => false,
        };
        Request {
            action,
            head_only: head.method == Method::Head,
            version: head.version,
            keep_alive: head.keep_alive,
            has_host: head.has_host,
            framing: head.body,
            json_body: head.content_type.is_none_or(is_json_content_type),
            authorized,
            token_set: config.api_token.is_some(),
            prometheus: super::status::wants_prometheus(head.query, head.accept),
            upgrade,
        }
    }

    /// The `Allow` list when the request is a preflight (`OPTIONS` on a path served).
    pub(crate) fn preflight(&self) -> Option<&'static str> {
        match self.action {
            Ok(Action::Options(allow)) => Some(allow),
            _ => None,
        }
    }

    /// The action, or the refusal the request gets before its body is read, in the order of
    /// docs/protocol.md §2.3:
    /// 400 (no Host), 404, 405, 401 (or 403 for `/devices`), 411, 413, 415. Asked once per
    /// request.
    pub(crate) fn admit(&mut self, max_body_bytes: usize) -> Result<Action, ApiError> {
        if !self.has_host && self.version == Version::Http11 {
            return Err(ApiError::MissingHost);
        }
        let action = std::mem::replace(&mut self.action, Err(ApiError::NotFound))?;
        if let Action::Serve(Endpoint::Devices) | Action::Head(Endpoint::Devices) = action {
            // Ids go only to a viewer who presented the api_token; with none set, every viewer
            // is anonymous, so nobody sees them (docs/protocol.md §18.2).
            if !self.token_set {
                return Err(ApiError::DeviceListOff);
            }
            if !self.authorized {
                return Err(ApiError::Unauthorized);
            }
        }
        if let Action::Serve(endpoint) = action {
            if endpoint.is_upstream() {
                if !self.authorized {
                    return Err(ApiError::Unauthorized);
                }
                match self.framing {
                    BodyFraming::None => return Err(ApiError::LengthRequired),
                    BodyFraming::Length(n) => {
                        check_content_length(n, max_body_bytes)?;
                    }
                    BodyFraming::Chunked => {}
                }
                if !self.json_body {
                    return Err(ApiError::UnsupportedMediaType);
                }
            }
        }
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_each_path_and_method() {
        assert_eq!(
            route(Method::Post, "/sse/push").unwrap(),
            Action::Serve(Endpoint::Push)
        );
        assert_eq!(
            route(Method::Post, "/sse/push/batch").unwrap(),
            Action::Serve(Endpoint::Batch)
        );
        assert_eq!(
            route(Method::Post, "/sse/send").unwrap(),
            Action::Serve(Endpoint::Send)
        );
        assert_eq!(
            route(Method::Get, "/ws").unwrap(),
            Action::Serve(Endpoint::Ws)
        );
        assert_eq!(
            route(Method::Head, "/health").unwrap(),
            Action::Head(Endpoint::Health)
        );
        assert_eq!(
            route(Method::Options, "/metrics").unwrap(),
            Action::Options("GET, HEAD, OPTIONS")
        );
        assert_eq!(
            route(Method::Options, "/sse/send").unwrap(),
            Action::Options("POST, OPTIONS")
        );
        assert_eq!(
            route(Method::Get, "/").unwrap(),
            Action::Serve(Endpoint::Page)
        );
        assert_eq!(
            route(Method::Head, "/devices").unwrap(),
            Action::Head(Endpoint::Devices)
        );
    }

    #[test]
    fn unknown_path_is_404_even_for_options_and_wrong_method_is_405() {
        assert!(matches!(
            route(Method::Options, "/nope"),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(
            route(Method::Post, "/health/"),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(
            route(Method::Get, "/sse/push"),
            Err(ApiError::MethodNotAllowed("POST, OPTIONS"))
        ));
        assert!(matches!(
            route(Method::Post, "/health"),
            Err(ApiError::MethodNotAllowed("GET, HEAD, OPTIONS"))
        ));
        assert!(matches!(
            route(Method::Delete, "/ws"),
            Err(ApiError::MethodNotAllowed(_))
        ));
    }
}

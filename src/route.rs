//! (method, path) → endpoint. No I/O.

use crate::error::ApiError;
use crate::http::parse::Method;

/// The daemon's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
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
    /// `POST /__fault/stall`: blocks the event loop (test builds only).
    #[cfg(feature = "fault-injection")]
    FaultStall,
}

/// What to do with a routed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
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
    pub fn at(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/ws" => Endpoint::Ws,
            "/health" => Endpoint::Health,
            "/metrics" => Endpoint::Metrics,
            "/sse/push" => Endpoint::Push,
            "/sse/push/batch" => Endpoint::Batch,
            "/sse/send" => Endpoint::Send,
            #[cfg(feature = "fault-injection")]
            "/__fault/stall" => Endpoint::FaultStall,
            _ => return None,
        })
    }

    /// True for the upstream endpoints under `/sse/` (POST, token-protected).
    pub fn is_upstream(self) -> bool {
        matches!(self, Endpoint::Push | Endpoint::Batch | Endpoint::Send)
    }

    /// True for endpoints served to POST.
    pub fn is_post(self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self == Endpoint::FaultStall {
            return true;
        }
        self.is_upstream()
    }

    /// The `Allow` header value for this endpoint's path.
    pub fn allow(self) -> &'static str {
        if self.is_post() {
            ALLOW_POST
        } else {
            ALLOW_GET
        }
    }
}

/// Routes a request: 404 before 405 (SPEC §10).
pub fn route(method: Method, path: &str) -> Result<Action, ApiError> {
    let endpoint = Endpoint::at(path).ok_or(ApiError::NotFound)?;
    match (method, endpoint.is_post()) {
        (Method::Options, _) => Ok(Action::Options(endpoint.allow())),
        (Method::Post, true) | (Method::Get, false) => Ok(Action::Serve(endpoint)),
        (Method::Head, false) => Ok(Action::Head(endpoint)),
        _ => Err(ApiError::MethodNotAllowed(endpoint.allow())),
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

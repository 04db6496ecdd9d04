//! The I/O shell of one TCP connection: read, parse, route, write. Every phase has a timeout
//! (SPEC §10 "Connection phases"); the buffers are allocated once per connection and reused
//! for every request on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

use crate::ack::AckSlot;
use crate::config::secs;
use crate::error::ApiError;
use crate::http::body::{check_content_length, ChunkedDecoder};
use crate::http::parse::{self, BodyFraming, HeadStatus, RequestHead, Version};
use crate::http::response::{self, Persist};
use crate::limits::MAX_HEAD_BYTES;
use crate::route::{self, Action, Endpoint};
use crate::state::{State, DEVICES, METRICS, PENDING};
use crate::ws;

/// Read buffer allocated per connection; it grows only for large bodies, up to the limits.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Response buffer allocated per connection.
pub const WRITE_BUFFER_BYTES: usize = 1024;
/// How long `/__fault/stall` blocks the event loop (test builds only).
#[cfg(feature = "fault-injection")]
pub const FAULT_STALL: Duration = Duration::from_secs(3);
/// Time allowed for the 503 written to a connection refused at capacity.
pub const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers a connection over the limit with 503 and closes it.
pub async fn refuse(mut stream: TcpStream) {
    let mut out = Vec::with_capacity(256);
    let err = ApiError::TooManyConnections;
    METRICS.response(err.status());
    err.write(&mut out, Persist::Close, false);
    let _ = timeout(REFUSE_WRITE_TIMEOUT, stream.write_all(&out)).await;
}

/// A connection that became a device session: the socket, the bytes read past the upgrade
/// request, and the validated upgrade.
pub struct Upgraded {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes already read past the upgrade request (early WebSocket frames).
    pub leftover: Vec<u8>,
    /// The validated upgrade.
    pub upgrade: ws::Upgrade,
}

/// Serves HTTP requests on `stream` until it closes, or returns it upgraded to a device
/// session. The caller runs the session as a task of its own, so the long-lived session
/// doesn't carry this function's buffers and state.
pub async fn serve(stream: TcpStream, peer: SocketAddr, state: Arc<State>) -> Option<Upgraded> {
    let mut conn = Conn::new(stream, state);
    let upgrade = conn.run().await?;
    log::debug!("{peer}: device {} upgrading", upgrade.user_id);
    let (stream, leftover) = conn.into_upgraded();
    Some(Upgraded {
        stream,
        leftover,
        upgrade,
    })
}

/// What the request head said, copied out of the read buffer so the buffer can move on.
struct Facts {
    action: Result<Action, ApiError>,
    head: bool,
    version: Version,
    keep_alive: bool,
    has_host: bool,
    framing: BodyFraming,
    expect_continue: bool,
    json_body: bool,
    authorized: bool,
    prometheus: bool,
    upgrade: Option<Result<ws::Upgrade, ApiError>>,
}

/// How a read ended.
enum Read {
    Data,
    Closed,
    TimedOut,
    ShuttingDown,
}

/// One connection's socket and buffers.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    pub(crate) out: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) scratch: Vec<u8>,
    /// Buffers of the push path.
    pub(crate) msg: crate::deliver::Scratch,
    pub(crate) state: Arc<State>,
    pub(crate) shutdown: watch::Receiver<bool>,
    ack: Option<Arc<AckSlot>>,
}

impl Conn {
    fn new(stream: TcpStream, state: Arc<State>) -> Conn {
        Conn {
            stream,
            buf: BytesMut::with_capacity(READ_BUFFER_BYTES),
            out: Vec::with_capacity(WRITE_BUFFER_BYTES),
            body: Vec::new(),
            scratch: Vec::new(),
            msg: crate::deliver::Scratch::default(),
            shutdown: state.shutdown.clone(),
            state,
            ack: None,
        }
    }

    /// The socket and the bytes read past the upgrade request; every buffer is dropped.
    fn into_upgraded(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf.to_vec())
    }

    /// Most bytes the read buffer may hold: a head, a body, and one read's worth of slack.
    fn buffer_limit(&self) -> usize {
        MAX_HEAD_BYTES + self.state.config.max_body_bytes + READ_BUFFER_BYTES
    }

    /// The request loop; returns the upgrade when the connection becomes a device session.
    async fn run(&mut self) -> Option<ws::Upgrade> {
        let idle = secs(self.state.config.idle_timeout_secs);
        let header = secs(self.state.config.header_timeout_secs);
        loop {
            if self.buf.is_empty() {
                // Idle between requests: close silently after idle_timeout_secs.
                match self.read_more(Instant::now() + idle, true).await {
                    Read::Data => {}
                    Read::Closed | Read::TimedOut | Read::ShuttingDown => return None,
                }
            }
            let head_deadline = Instant::now() + header;
            let facts = loop {
                match parse::parse_head(&self.buf) {
                    Ok(HeadStatus::Complete { head, consumed }) => {
                        let facts = self.facts(&head);
                        self.buf.advance(consumed);
                        break facts;
                    }
                    Ok(HeadStatus::Partial) => match self.read_more(head_deadline, true).await {
                        Read::Data => continue,
                        Read::TimedOut => {
                            self.fail(ApiError::HeadTimeout).await;
                            return None;
                        }
                        Read::Closed | Read::ShuttingDown => return None,
                    },
                    Err(e) => {
                        self.fail(ApiError::Http(e)).await;
                        return None;
                    }
                }
            };
            match self.handle(facts).await {
                Next::KeepAlive => continue,
                Next::Close => return None,
                Next::Upgrade(u) => return Some(u),
            }
        }
    }

    /// Copies out of the head everything the rest of the request needs.
    fn facts(&self, head: &RequestHead<'_>) -> Facts {
        let config = &self.state.config;
        let action = route::route(head.method, head.path);
        let upgrade = match action {
            Ok(Action::Serve(Endpoint::Ws)) => Some(ws::check_upgrade(head, config)),
            _ => None,
        };
        let authorized = match (&config.api_token, head.authorization) {
            (None, _) => true,
            (Some(token), Some(value)) => crate::auth::bearer_matches(value, token.as_bytes()),
            (Some(_), None) => false,
        };
        Facts {
            action,
            head: head.method == parse::Method::Head,
            version: head.version,
            keep_alive: head.keep_alive,
            has_host: head.has_host,
            framing: head.body,
            expect_continue: head.expect_continue,
            json_body: head.content_type.is_none_or(parse::is_json_content_type),
            authorized,
            prometheus: crate::metrics::wants_prometheus(head.query, head.accept),
            upgrade,
        }
    }

    /// Serves one parsed request.
    async fn handle(&mut self, mut facts: Facts) -> Next {
        let keep_alive = facts.keep_alive && !self.state.shutting_down();
        let version = facts.version;
        let persist = Persist::new(version, keep_alive);
        // Any answer to HEAD goes without its body, errors included (a body would be read as
        // the start of the next response on a keep-alive connection).
        let head_only = facts.head;
        let action = match self.refusal(&mut facts) {
            Ok(action) => action,
            Err(err) => {
                // A well-framed refused request keeps the connection if its body can be skipped.
                let keep = keep_alive
                    && !err.closes_connection()
                    && self.skip_body(facts.framing, facts.expect_continue).await;
                return self.respond_error(err, version, keep, head_only).await;
            }
        };
        if facts.expect_continue
            && facts.framing != BodyFraming::None
            && self.write(response::CONTINUE_100).await.is_err()
        {
            return Next::Close;
        }
        if let Err(err) = self.read_body(facts.framing).await {
            return self.respond_error(err, version, false, head_only).await;
        }
        self.out.clear();
        let next = match action {
            Action::Options(allow) => {
                response::write_head(&mut self.out, 204, None, None, persist, &[("Allow", allow)]);
                METRICS.response(204);
                Next::done(keep_alive)
            }
            Action::Serve(Endpoint::Health) | Action::Head(Endpoint::Health) => {
                self.health(persist, head_only);
                Next::done(keep_alive)
            }
            Action::Serve(Endpoint::Metrics) | Action::Head(Endpoint::Metrics) => {
                self.metrics(persist, head_only, facts.prometheus);
                Next::done(keep_alive)
            }
            Action::Serve(Endpoint::Ws) | Action::Head(Endpoint::Ws) => {
                return match facts.upgrade {
                    Some(Ok(upgrade)) if !head_only => {
                        ws::write_switching_protocols(&mut self.out, &upgrade);
                        METRICS.response(101);
                        match self.flush_out().await {
                            Ok(()) => Next::Upgrade(upgrade),
                            Err(()) => Next::Close,
                        }
                    }
                    Some(Err(err)) => {
                        self.respond_error(err, version, keep_alive, head_only)
                            .await
                    }
                    _ => {
                        self.respond_error(
                            ApiError::UpgradeRequired,
                            version,
                            keep_alive,
                            head_only,
                        )
                        .await
                    }
                };
            }
            Action::Serve(Endpoint::Push) => {
                let ack = Arc::clone(self.ack.get_or_insert_with(|| AckSlot::new(1)));
                let status = crate::deliver::push(
                    &self.body,
                    &self.state,
                    &ack,
                    &mut self.msg,
                    &mut self.out,
                    persist,
                )
                .await;
                METRICS.response(status);
                Next::done(keep_alive)
            }
            Action::Serve(Endpoint::Batch) => {
                let status = crate::deliver::batch(
                    &self.body,
                    &self.state,
                    &mut self.msg,
                    &mut self.out,
                    persist,
                )
                .await;
                METRICS.response(status);
                Next::done(keep_alive)
            }
            Action::Serve(Endpoint::Send) => {
                return match crate::send::serve(self, keep_alive, version).await {
                    Ok(true) => Next::KeepAlive,
                    Ok(false) | Err(()) => Next::Close,
                };
            }
            #[cfg(feature = "fault-injection")]
            Action::Serve(Endpoint::FaultStall) => {
                // A real stall: the thread running the event loop blocks.
                std::thread::sleep(FAULT_STALL);
                response::write_json(&mut self.out, 200, b"{}", persist, &[], false);
                Next::done(keep_alive)
            }
            Action::Head(_) => {
                // Upstream endpoints have no HEAD; route() answers 405 before this.
                return self
                    .respond_error(ApiError::MethodNotAllowed(""), version, keep_alive, true)
                    .await;
            }
        };
        match self.flush_out().await {
            Ok(()) => next,
            Err(()) => Next::Close,
        }
    }

    /// The refusal a request gets before its body is read, in SPEC order:
    /// 400 (no Host), 404, 405, 401, 411, 413, 415.
    fn refusal(&self, facts: &mut Facts) -> Result<Action, ApiError> {
        if !facts.has_host && facts.version == Version::Http11 {
            return Err(ApiError::MissingHost);
        }
        let action = std::mem::replace(&mut facts.action, Err(ApiError::NotFound))?;
        if let Action::Serve(endpoint) = action {
            if endpoint.is_upstream() {
                if !facts.authorized {
                    return Err(ApiError::Unauthorized);
                }
                match facts.framing {
                    BodyFraming::None => return Err(ApiError::LengthRequired),
                    BodyFraming::Length(n) => {
                        check_content_length(n, self.state.config.max_body_bytes)?;
                    }
                    BodyFraming::Chunked => {}
                }
                if !facts.json_body {
                    return Err(ApiError::UnsupportedMediaType);
                }
            }
        }
        Ok(action)
    }

    /// Reads the body into `self.body`.
    async fn read_body(&mut self, framing: BodyFraming) -> Result<(), ApiError> {
        self.body.clear();
        let max = self.state.config.max_body_bytes;
        // One deadline for the whole body: a per-read timeout alone would let a client
        // dribble a byte at a time and hold the connection forever.
        let deadline = Instant::now() + secs(self.state.config.header_timeout_secs);
        match framing {
            BodyFraming::None => Ok(()),
            BodyFraming::Length(n) => {
                let n = check_content_length(n, max)?;
                while self.buf.len() < n {
                    self.body_read(deadline).await?;
                }
                self.body.extend_from_slice(&self.buf[..n]);
                self.buf.advance(n);
                Ok(())
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new(max);
                loop {
                    let decoded = decoder.decode(&self.buf, &mut self.body)?;
                    self.buf.advance(decoded.consumed);
                    if decoded.done {
                        return Ok(());
                    }
                    self.body_read(deadline).await?;
                }
            }
        }
    }

    async fn body_read(&mut self, deadline: Instant) -> Result<(), ApiError> {
        match self.read_more(deadline, false).await {
            Read::Data => Ok(()),
            Read::TimedOut => Err(ApiError::BodyTimeout),
            // The peer is gone; nothing will read an answer.
            Read::Closed | Read::ShuttingDown => {
                Err(ApiError::Http(crate::http::error::HttpError::Malformed))
            }
        }
    }

    /// Reads and drops the body of a refused request; false when the connection can't be reused.
    async fn skip_body(&mut self, framing: BodyFraming, expect_continue: bool) -> bool {
        match framing {
            BodyFraming::None => true,
            // Without our 100 the client may or may not send the body: the framing is lost.
            _ if expect_continue => false,
            BodyFraming::Length(n) if n > self.state.config.max_body_bytes as u64 => false,
            _ => self.read_body(framing).await.is_ok(),
        }
    }

    /// Reads more bytes into the buffer before `deadline`.
    async fn read_more(&mut self, deadline: Instant, stop_on_shutdown: bool) -> Read {
        if self.buf.len() >= self.buffer_limit() {
            // The parser refuses heads past MAX_HEAD_BYTES and bodies past max_body_bytes,
            // so a full buffer here means a peer we can't serve.
            return Read::Closed;
        }
        self.buf.reserve(READ_BUFFER_BYTES);
        let shutdown = &mut self.shutdown;
        let read = tokio::select! {
            r = timeout_at(deadline, self.stream.read_buf(&mut self.buf)) => r,
            _ = crate::state::stopping(shutdown), if stop_on_shutdown => return Read::ShuttingDown,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => Read::Closed,
            Ok(Ok(_)) => Read::Data,
            Err(_) => Read::TimedOut,
        }
    }

    async fn respond_error(
        &mut self,
        err: ApiError,
        version: Version,
        keep_alive: bool,
        head_only: bool,
    ) -> Next {
        let keep = keep_alive && !err.closes_connection();
        self.out.clear();
        err.write(&mut self.out, Persist::new(version, keep), head_only);
        METRICS.response(err.status());
        if self.flush_out().await.is_err() {
            return Next::Close;
        }
        Next::done(keep)
    }

    /// Writes an error that ends the connection.
    async fn fail(&mut self, err: ApiError) {
        let _ = self.respond_error(err, Version::Http11, false, false).await;
    }

    fn health(&mut self, persist: Persist, head_only: bool) {
        use std::io::Write;
        let healthy = self.state.is_healthy();
        let mut body = [0u8; 160];
        let len = {
            let mut cursor = std::io::Cursor::new(&mut body[..]);
            let _ = write!(
                cursor,
                "{{\"status\":\"{}\",\"connections\":{},\"uptime\":\"running\",\"uptime_seconds\":{}}}",
                if healthy { "healthy" } else { "unhealthy" },
                DEVICES.len(),
                self.state.uptime_secs()
            );
            cursor.position() as usize
        };
        let (status, extra): (u16, &[(&str, &str)]) = if healthy {
            (200, &[])
        } else {
            (503, &[("Retry-After", "1")])
        };
        let body = body.get(..len).unwrap_or_default();
        response::write_json(&mut self.out, status, body, persist, extra, head_only);
        METRICS.response(status);
    }

    fn metrics(&mut self, persist: Persist, head_only: bool, prometheus: bool) {
        self.scratch.clear();
        let uptime = self.state.uptime_secs();
        if prometheus {
            crate::metrics::write_prometheus(
                &mut self.scratch,
                &METRICS,
                DEVICES.len(),
                PENDING.len(),
                uptime,
            );
            response::write_head(
                &mut self.out,
                200,
                Some(crate::metrics::PROMETHEUS_CONTENT_TYPE),
                Some(self.scratch.len()),
                persist,
                &[],
            );
            if !head_only {
                self.out.extend_from_slice(&self.scratch);
            }
        } else {
            crate::metrics::write_json(
                &mut self.scratch,
                &METRICS,
                DEVICES.len(),
                PENDING.len(),
                uptime,
            );
            response::write_json(&mut self.out, 200, &self.scratch, persist, &[], head_only);
        }
        METRICS.response(200);
    }

    /// Writes `self.out`, bounded by the idle timeout so a peer that stops reading can't pin us.
    pub(crate) async fn flush_out(&mut self) -> Result<(), ()> {
        let limit = secs(self.state.config.idle_timeout_secs);
        let r = timeout(limit, self.stream.write_all(&self.out)).await;
        self.out.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let limit = secs(self.state.config.idle_timeout_secs);
        match timeout(limit, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    Upgrade(ws::Upgrade),
}

impl Next {
    fn done(keep_alive: bool) -> Next {
        if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }
}

//! The I/O shell of one upstream connection: read, let the framer cut the bytes into
//! requests, let `app` decide and answer, write. Every phase has a timeout (docs/protocol.md
//! §2.2); the buffers are allocated once per connection and reused for every
//! request on it.

use std::net::SocketAddr;
use std::sync::Arc;
#[cfg(feature = "fault-injection")]
use std::time::Duration;

use bytes::Buf;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use super::io::{Io, Next, Read, Scratch, MAX_PIPELINED_BYTES, READ_BUFFER_BYTES};
use super::socket::Socket;
use crate::app::error::ApiError;
use crate::app::route::{Action, Endpoint, Request};
use crate::app::{cors, push, send, status};
use crate::hub::ack::AckSlot;
use crate::hub::budget::{Charge, OverBudget, Use};
use crate::hub::counter::InProgress;
use crate::hub::Hub;
use crate::ops::settings::secs;
use crate::wire::http::framer::{Framer, Interim, Step};
use crate::wire::http::response::{self, Persist, CONTINUE_100};
use crate::wire::http::HttpError;
use crate::wire::limits::MAX_HEAD_BYTES;
use crate::wire::upgrade::{self, Upgrade};

/// How long `/__fault/stall` blocks the event loop (test builds only).
#[cfg(feature = "fault-injection")]
pub(crate) const FAULT_STALL: Duration = Duration::from_secs(3);
/// A body buffer up to this size is kept for the connection's next request; a larger one is
/// freed once its request is served.
pub(crate) const KEPT_BODY_BYTES: usize = READ_BUFFER_BYTES;
/// Time allowed for the 503 written to a connection refused at capacity.
pub(crate) const REFUSE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers a connection over the limit with 503 and closes it.
pub(crate) async fn refuse(hub: &Hub, mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::with_capacity(256);
    let err = ApiError::TooManyConnections;
    hub.metrics.response(err.status());
    err.write(&mut out, Persist::Close, false);
    let _ = timeout(REFUSE_WRITE_TIMEOUT, stream.write_all(&out)).await;
}

/// A plain HTTP request on the TLS port: a plain `400` saying so, and a lingering close so
/// the client can read it (docs/protocol.md §19.3).
#[cfg(feature = "tls")]
pub(crate) async fn answer_plain_http(hub: &Hub, stream: TcpStream) {
    let mut io = Io::new(
        Socket::Plain(stream),
        READ_BUFFER_BYTES,
        REFUSE_WRITE_TIMEOUT,
        hub.budget,
    );
    if io
        .refuse(hub, &ApiError::PlainHttpOnTls, Persist::Close, false)
        .await
        .is_ok()
    {
        let mut shutdown = hub.shutdown.clone();
        io.linger(&mut shutdown).await;
    }
}

/// A connection that became a device session: the socket, the bytes read past the upgrade
/// request, and the validated upgrade.
pub(crate) struct Upgraded {
    /// The socket.
    pub(crate) stream: Socket,
    /// Bytes already read past the upgrade request (early WebSocket frames).
    pub(crate) leftover: Vec<u8>,
    /// The validated upgrade.
    pub(crate) upgrade: Upgrade,
}

/// Serves HTTP requests on `stream` until it closes, or returns it upgraded to a device
/// session. The caller runs the session as a task of its own, so the long-lived session
/// doesn't carry this function's buffers and state.
pub(crate) async fn serve(stream: Socket, peer: SocketAddr, hub: Arc<Hub>) -> Option<Upgraded> {
    let mut conn = Conn::new(stream, hub);
    let Some(upgrade) = conn.run().await else {
        if conn.linger {
            conn.io.linger(&mut conn.shutdown).await;
        }
        return None;
    };
    log::debug!("{peer}: device {} upgrading", upgrade.user_id);
    Some(Upgraded {
        stream: conn.io.stream,
        leftover: conn.io.buf.to_vec(),
        upgrade,
    })
}

/// The request whose body is being read, and what becomes of it once it is in.
enum Pending {
    /// Serve it.
    Serve(Request, Action),
    /// Answer it with this refusal; its body is read only to reach the next request.
    Refuse(Request, ApiError),
}

/// One connection's socket, buffers and framing state.
struct Conn {
    io: Io,
    framer: Framer,
    /// The current request's body.
    body: Vec<u8>,
    /// Pays for `body`'s capacity: bodies are reserved before they are read.
    body_charge: Charge,
    scratch: Scratch,
    hub: Arc<Hub>,
    shutdown: watch::Receiver<bool>,
    /// Reused by every push on this connection.
    ack: Option<Arc<AckSlot>>,
    /// An error answer that closes the connection went out: close the RFC 9112 §9.6 way.
    linger: bool,
}

impl Conn {
    fn new(stream: Socket, hub: Arc<Hub>) -> Conn {
        let config = &hub.config;
        // A head, one read's worth of slack, and a send stream's pipelined requests.
        let buffer_limit = MAX_HEAD_BYTES + MAX_PIPELINED_BYTES + READ_BUFFER_BYTES;
        Conn {
            io: Io::new(
                stream,
                buffer_limit,
                secs(config.write_timeout_secs),
                hub.budget,
            ),
            framer: Framer::new(config.max_body_bytes),
            body: Vec::new(),
            body_charge: hub.budget.empty(),
            scratch: Scratch::default(),
            shutdown: hub.shutdown.clone(),
            hub,
            ack: None,
            linger: false,
        }
    }

    /// The request loop, driven by the framer's steps; returns the upgrade when the
    /// connection becomes a device session.
    async fn run(&mut self) -> Option<Upgrade> {
        let config = &self.hub.config;
        let (idle, header, body) = (
            secs(config.idle_timeout_secs),
            secs(config.header_timeout_secs),
            secs(config.body_timeout_secs),
        );
        let mut pending: Option<Pending> = None;
        // Counts the request between its head and the end of its answer, however it ends.
        let mut in_progress: Option<InProgress<'static>> = None;
        let metrics = self.hub.metrics;
        // The current phase's deadline; `None` between requests.
        let mut deadline: Option<Instant> = None;
        loop {
            if self.make_room_for_body().is_err() {
                self.abort(pending.take(), ApiError::OverBudget).await;
                return None;
            }
            let step = self.framer.step(&self.io.buf, &mut self.body);
            let next = match step {
                Err(e) => {
                    self.abort(pending.take(), ApiError::Http(e)).await;
                    return None;
                }
                Ok(Step::Head { head, consumed }) => {
                    in_progress.replace(metrics.requests_in_progress.enter());
                    let request = Request::new(&head, &self.hub.config);
                    cors::apply(&head, &request, &self.hub, &mut self.io.head_fields);
                    self.io.buf.advance(consumed);
                    self.release_body();
                    // One deadline for the whole body: a per-read timeout alone would let a
                    // client dribble a byte at a time and hold the connection forever.
                    deadline = Some(Instant::now() + body);
                    let keep_alive = request.keep_alive && !self.hub.shutting_down();
                    match self.admit(request, keep_alive).await {
                        Ok(p) => {
                            pending = Some(p);
                            continue;
                        }
                        Err(next) => next,
                    }
                }
                Ok(Step::BodyDone { consumed }) => {
                    self.io.buf.advance(consumed);
                    deadline = None;
                    match pending.take() {
                        Some(Pending::Serve(request, action)) => self.handle(request, action).await,
                        Some(Pending::Refuse(request, err)) => {
                            let keep = request.keep_alive && !self.hub.shutting_down();
                            self.respond_error(&err, &request, keep).await
                        }
                        None => continue,
                    }
                }
                Ok(Step::NeedMore { consumed }) => {
                    self.io.buf.advance(consumed);
                    let in_body = self.framer.in_body();
                    let idle_now = !in_body && self.io.buf.is_empty() && deadline.is_none();
                    let until = match deadline {
                        _ if idle_now => Instant::now() + idle,
                        Some(d) => d,
                        None => *deadline.insert(Instant::now() + header),
                    };
                    // Shutdown ends a connection between requests or inside a head, never
                    // while a body is arriving: that request is answered.
                    let shutdown = (!in_body).then_some(&mut self.shutdown);
                    match self.io.read_more(until, shutdown).await {
                        Read::Data => continue,
                        Read::TimedOut if in_body => {
                            self.abort(pending.take(), ApiError::BodyTimeout).await;
                            return None;
                        }
                        Read::TimedOut if !idle_now => {
                            self.fail(ApiError::HeadTimeout).await;
                            return None;
                        }
                        Read::Closed if in_body => {
                            // The peer is gone; an answer is tried, nothing will read it.
                            let gone = ApiError::Http(HttpError::Malformed);
                            self.abort(pending.take(), gone).await;
                            return None;
                        }
                        Read::OverBudget => {
                            self.abort(pending.take(), ApiError::OverBudget).await;
                            return None;
                        }
                        Read::TimedOut | Read::Closed | Read::ShuttingDown => return None,
                    }
                }
            };
            drop(in_progress.take());
            self.release_body();
            self.scratch.shrink();
            self.io.shrink_read();
            match next {
                Next::KeepAlive => {}
                Next::Close => return None,
                Next::Upgrade(u) => return Some(u),
            }
        }
    }

    /// Reserves (and pays for) room for what the next framer step may add to the body, so
    /// a body never grows past what the budget allowed. Err: it does not fit.
    fn make_room_for_body(&mut self) -> Result<(), OverBudget> {
        let growth = self.framer.body_growth(self.io.buf.len(), self.body.len());
        let need = self.body.len() + growth;
        if need > self.body.capacity() {
            self.body_charge.grow_to(need, Use::Body)?;
            self.body.reserve_exact(need - self.body.len());
            // The allocator may round up; the charge follows the real capacity.
            let _ = self.body_charge.grow_to(self.body.capacity(), Use::Body);
        }
        Ok(())
    }

    /// Empties the body buffer for the next request; a large one is freed, and its charge
    /// given back, so that one big request does not keep its memory for the connection's life.
    fn release_body(&mut self) {
        self.body.clear();
        if self.body.capacity() > KEPT_BODY_BYTES {
            self.body = Vec::new();
        }
        self.body_charge.shrink_to(self.body.capacity());
    }

    /// Decides a request from its head: what its body is read for, or the answer it gets
    /// at once when its body cannot be read.
    async fn admit(&mut self, mut request: Request, keep_alive: bool) -> Result<Pending, Next> {
        // A declared length is paid for before any of it is read: what does not fit the
        // budget is refused now, like any refusal decided from the head.
        let decided = request
            .admit(self.hub.config.max_body_bytes)
            .and_then(|action| match self.reserve_declared_body() {
                Ok(()) => Ok(action),
                Err(OverBudget) => Err(ApiError::OverBudget),
            });
        match decided {
            Ok(action) => match self.framer.read_body() {
                Ok(Interim::None) => Ok(Pending::Serve(request, action)),
                Ok(Interim::Continue) => match self.io.write_now(CONTINUE_100).await {
                    Ok(()) => Ok(Pending::Serve(request, action)),
                    Err(_) => Err(Next::Close),
                },
                Err(e) => Err(self
                    .respond_error(&ApiError::Http(e), &request, false)
                    .await),
            },
            // A well-framed refused request keeps the connection if its body can be skipped.
            Err(err) if keep_alive && !err.closes_connection() && self.framer.skip_body() => {
                Ok(Pending::Refuse(request, err))
            }
            Err(err) => Err(self.respond_error(&err, &request, false).await),
        }
    }

    /// Pays for and reserves the declared length of the body just accepted.
    fn reserve_declared_body(&mut self) -> Result<(), OverBudget> {
        let max = self.hub.config.max_body_bytes;
        // Over the limit is 413 when the body is accepted, whatever the budget.
        let Some(len) = self
            .framer
            .declared_length()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= max)
        else {
            return Ok(());
        };
        if len > self.body.capacity() {
            self.body_charge.grow_to(len, Use::Body)?;
            self.body.reserve_exact(len);
            let _ = self.body_charge.grow_to(self.body.capacity(), Use::Body);
        }
        Ok(())
    }

    /// Serves one request whose body is in `self.body`.
    async fn handle(&mut self, request: Request, action: Action) -> Next {
        let keep_alive = request.keep_alive && !self.hub.shutting_down();
        let persist = Persist::new(request.version, keep_alive);
        let head_only = request.head_only;
        let hub = Arc::clone(&self.hub);
        self.io.out.clear();
        let status = match action {
            Action::Options(allow) => {
                response::write_head(
                    &mut self.io.out,
                    204,
                    None,
                    None,
                    persist,
                    &[("Allow", allow)],
                );
                204
            }
            Action::Serve(Endpoint::Health) | Action::Head(Endpoint::Health) => status::health(
                &hub,
                &mut self.scratch.text,
                &mut self.io.out,
                persist,
                head_only,
            ),
            Action::Serve(Endpoint::Metrics) | Action::Head(Endpoint::Metrics) => status::metrics(
                &hub,
                request.prometheus,
                &mut self.scratch.text,
                &mut self.io.out,
                persist,
                head_only,
            ),
            Action::Serve(Endpoint::Page) | Action::Head(Endpoint::Page) => {
                status::page(&mut self.io.out, persist, head_only)
            }
            Action::Serve(Endpoint::Devices) | Action::Head(Endpoint::Devices) => {
                status::devices(&hub, &mut self.io.out, persist, head_only)
            }
            Action::Serve(Endpoint::Ws) | Action::Head(Endpoint::Ws) => {
                return self.upgrade(request, keep_alive).await;
            }
            // Each starts from the body and needs it no more once its frames are queued: the
            // body is given back before the wait for delivery, so a push that waits on a slow
            // device holds its frame, not also its body.
            Action::Serve(Endpoint::Push) => {
                let ack = Arc::clone(self.ack.get_or_insert_with(|| AckSlot::new(1)));
                match push::push_start(&self.body, &hub, &ack, &mut self.scratch.push) {
                    Err(err) => err.answer(&mut self.io.out, persist),
                    Ok(in_flight) => {
                        self.release_body();
                        let scratch = &mut self.scratch.push;
                        push::push_finish(in_flight, &hub, &ack, scratch, &mut self.io.out, persist)
                            .await
                    }
                }
            }
            Action::Serve(Endpoint::Batch) => {
                match push::batch_start(&self.body, &hub, &mut self.scratch.push) {
                    Err(err) => err.answer(&mut self.io.out, persist),
                    Ok(in_flight) => {
                        self.release_body();
                        push::batch_finish(in_flight, &hub, &mut self.io.out, persist).await
                    }
                }
            }
            Action::Serve(Endpoint::Send) => {
                let start = send::start(&self.body, &hub, &mut self.scratch.push);
                self.release_body();
                let request = super::stream::Request {
                    version: request.version,
                    keep_alive,
                };
                return super::stream::serve(
                    &mut self.io,
                    &hub,
                    &self.shutdown,
                    request,
                    start,
                    &mut self.scratch,
                )
                .await;
            }
            #[cfg(feature = "fault-injection")]
            Action::Serve(Endpoint::FaultStall) => {
                // A real stall: the thread running the event loop blocks.
                std::thread::sleep(FAULT_STALL);
                response::write_json(&mut self.io.out, 200, b"{}", persist, &[], false);
                200
            }
            Action::Head(_) => {
                // Upstream endpoints have no HEAD; route() answers 405 before this.
                let err = ApiError::MethodNotAllowed("");
                return self.respond_error(&err, &request, keep_alive).await;
            }
        };
        if let Some(prepaid) = self.scratch.push.reply.take() {
            self.io.prepaid(prepaid);
        }
        // `/health` and `/metrics` are answered whatever the budget: an operator needs them
        // most when it is full, and their answers are small and bounded (CONNECTION_BYTES).
        let status = if matches!(action, Action::Serve(Endpoint::Health | Endpoint::Metrics))
            || self.io.pay_for_answer(0).is_ok()
        {
            status
        } else {
            // Only answers of requests that changed nothing are left unpaid (a batch pays
            // before it delivers), so the budget's refusal can stand in for them.
            self.io.out.clear();
            ApiError::OverBudget.write(&mut self.io.out, persist, head_only);
            ApiError::OverBudget.status()
        };
        hub.metrics.response(status);
        match self.io.flush().await {
            Ok(()) => Next::done(keep_alive),
            Err(_) => Next::Close,
        }
    }

    /// `/ws`: the 101 and the hand-over, or the upgrade's refusal.
    async fn upgrade(&mut self, mut request: Request, keep_alive: bool) -> Next {
        match request.upgrade.take() {
            Some(Ok(upgrade)) if !request.head_only => {
                upgrade::write_switching_protocols(&mut self.io.out, &upgrade);
                self.hub.metrics.response(101);
                match self.io.flush().await {
                    Ok(()) => Next::Upgrade(upgrade),
                    Err(_) => Next::Close,
                }
            }
            Some(Err(err)) => self.respond_error(&err, &request, keep_alive).await,
            _ => {
                self.respond_error(&ApiError::UpgradeRequired, &request, keep_alive)
                    .await
            }
        }
    }

    async fn respond_error(&mut self, err: &ApiError, request: &Request, keep_alive: bool) -> Next {
        let persist = Persist::new(request.version, keep_alive);
        match self
            .io
            .refuse(&self.hub, err, persist, request.head_only)
            .await
        {
            Ok(keep) => {
                self.linger = !keep;
                Next::done(keep)
            }
            Err(_) => Next::Close,
        }
    }

    /// Ends the connection when a body cannot be read to its end: a refused request gets its
    /// refusal, a served one `cause`.
    async fn abort(&mut self, pending: Option<Pending>, cause: ApiError) {
        let (request, err) = match pending {
            Some(Pending::Refuse(request, refusal)) => (request, refusal),
            Some(Pending::Serve(request, _)) => (request, cause),
            None => return self.fail(cause).await,
        };
        self.respond_error(&err, &request, false).await;
    }

    /// Writes an error that ends the connection.
    async fn fail(&mut self, err: ApiError) {
        self.linger = self
            .io
            .refuse(&self.hub, &err, Persist::Close, false)
            .await
            .is_ok();
    }
}

//! The gateway's one port on hyper: HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN `h2` with
//! TLS) for the JSON API and KMS, and HTTP/1.1 websocket upgrades for the data and control
//! channels. Every limit on what a peer may send is applied here: TLS handshake, header,
//! idle and request timeouts, body size per operation and connection counts (see [`Limits`]
//! and [`super::admission`]). Only connections that authenticated are kept alive. What an
//! unauthenticated peer causes is logged at debug only: the audit log holds it, rate-limited,
//! and a log line each would be the amplification that rate avoids.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admission::{BodyReservation, Source, Ticket, connection_cap};
use super::api::{JSON, error_body};
use super::auth::{ApiError, ApiRequest};
use super::config::Limits;
use super::framing::{Framed, Framing, Verdicts};
use super::lock;
use super::service::Service;

/// Read buffer of each websocket the gateway serves: smaller than tungstenite's 128 KiB, as a
/// gateway holds two sockets per session (see BENCHMARKS.md, idle sessions).
const GATEWAY_READ_BUFFER: usize = 16 * 1024;
/// How long requests in progress may take to finish once the gateway stops.
const DRAIN: Duration = Duration::from_secs(5);
/// HTTP/2 pings keep idle API connections through NATs and find dead peers.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Streams one HTTP/2 connection may run at once.
const H2_MAX_STREAMS: u32 = 64;
/// Largest HTTP/2 header list (HTTP/1.1 heads are bounded by [`H1_BUFFER`]).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// What hyper may buffer of one HTTP/1.1 connection's input (a head, a piece of a body),
/// instead of its default of about 400 KiB: an unauthenticated peer's share of memory.
const H1_BUFFER: usize = 64 * 1024;
/// HTTP/2 flow-control windows, instead of hyper's 1 MiB each: what a peer may send ahead
/// of the gateway reading it. A stream's window holds the largest operation body
/// ([`Limits::body_limit`]); API calls are small, so nothing is slower.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 128 * 1024;
/// First and longest pause of the accept loop when accepting fails (out of descriptors).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Upgraded websockets, aborted with the server: they outlive the HTTP connection task
/// that answered their upgrade, but not the gateway.
type Upgrades = Arc<Mutex<JoinSet<()>>>;

/// Accepts connections until the service stops, then lets requests in progress finish (for
/// at most [`DRAIN`]). Upgraded websockets stay up until this task is aborted, so that
/// shutdown can let the relay flush them first.
pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: Arc<Service>,
) {
    let limits = service.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(secs(limits.header_read_timeout_secs))
        .max_buf_size(H1_BUFFER)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST);
    let builder = Arc::new(builder);
    let tls = tls.map(|config| {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let upgrades: Upgrades = Arc::default();
    let cap = connection_cap(&limits);
    let permits = Arc::new(Semaphore::new(cap));
    let mut connections = JoinSet::new();
    let mut backoff: Option<Duration> = None;
    loop {
        let accepted = tokio::select! {
            () = service.stopping.cancelled() => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: shed, and back off rather than spin.
                let pause = match backoff {
                    None => {
                        tracing::warn!(%error, cap, "accept failed; closing the oldest unauthenticated connection and backing off");
                        ACCEPT_BACKOFF.0
                    }
                    Some(pause) => (pause * 2).min(ACCEPT_BACKOFF.1),
                };
                backoff = Some(pause);
                service.admission.shed_oldest(None);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if backoff.take().is_some() {
            tracing::info!("accepting connections again");
        }
        let ticket = match service.admission.admit(Source::of(peer.ip())) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                // Not logged above debug, nor audited: that would be the amplification.
                tracing::debug!(%peer, ?refusal, "connection refused on accept");
                drop(tcp);
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Full: make room by closing the connection that has waited longest without
                // authenticating, so that a flood cannot lock callers and agents out; with
                // none to close, wait as in the accept queue.
                service.admission.shed_oldest(Some(&ticket));
                tokio::select! {
                    () = service.stopping.cancelled() => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let connection = Connection {
            service: service.clone(),
            builder: builder.clone(),
            upgrades: upgrades.clone(),
            peer,
            state: Arc::new(ConnState {
                ticket: Mutex::new(Some(ticket)),
                permit: Mutex::new(Some(permit)),
                close: Notify::new(),
                in_flight: AtomicUsize::new(0),
                idle_since: Mutex::new(tokio::time::Instant::now()),
            }),
        };
        let tls = tls.clone();
        connections.spawn(connection.serve(tcp, tls));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    // Keep the upgraded sockets until the gateway aborts this task.
    std::future::pending::<()>().await;
}

fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs.max(1))
}

struct Connection {
    service: Arc<Service>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    upgrades: Upgrades,
    peer: SocketAddr,
    state: Arc<ConnState>,
}

/// What the requests of one connection share with the task serving it.
struct ConnState {
    /// Its place in the per-source accounting, until a request authenticates (or a data
    /// channel takes it along).
    ticket: Mutex<Option<Ticket>>,
    /// Its slot under the global cap; an upgraded websocket takes it along.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// Asks the serving task to close once the answers in progress are sent.
    close: Notify,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// When the last answer was given (or the connection accepted).
    idle_since: Mutex<tokio::time::Instant>,
}

impl ConnState {
    fn authenticated(&self) {
        if let Some(ticket) = lock(&self.ticket).as_mut() {
            ticket.authenticated();
        }
    }

    /// Cancelled when the connection is shed (never, once it authenticated).
    fn shed(&self) -> CancellationToken {
        lock(&self.ticket)
            .as_ref()
            .map_or_else(CancellationToken::new, Ticket::shed)
    }

    /// Ends the connection after `response` unless `keep`: keep-alive is for requests that
    /// proved who sent them.
    fn answered(
        &self,
        version: Version,
        mut response: Response<Full<Bytes>>,
        keep: bool,
    ) -> Response<Full<Bytes>> {
        if !keep {
            if version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            self.close.notify_one();
        }
        response
    }
}

/// Counts a request as in progress while it lives.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: &Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *lock(&self.0.idle_since) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connection {
    async fn serve(self, tcp: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return self.serve_io(tcp).await;
        };
        let timeout = secs(self.service.limits.tls_handshake_timeout_secs);
        let shed = self.state.shed();
        tokio::select! {
            accepted = tokio::time::timeout(timeout, tls.accept(tcp)) => match accepted {
                Ok(Ok(stream)) => self.serve_io(stream).await,
                Ok(Err(error)) => tracing::debug!(peer = %self.peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
            },
            () = shed.cancelled() => tracing::debug!(peer = %self.peer, "shed during the TLS handshake"),
        }
    }

    async fn serve_io<S>(self, io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            service,
            builder,
            upgrades,
            peer,
            state,
        } = self;
        let (io, verdicts) = Framed::new(io);
        let stopping = service.stopping.clone();
        let idle_limit = secs(service.limits.header_read_timeout_secs);
        let shed = state.shed();
        let requests = state.clone();
        let handler = hyper::service::service_fn(move |request| {
            let in_flight = InFlight::new(&requests);
            let exchange = Exchange {
                service: service.clone(),
                upgrades: upgrades.clone(),
                peer,
                state: requests.clone(),
                verdicts: verdicts.clone(),
            };
            async move {
                let response = exchange.handle(request).await;
                drop(in_flight);
                response
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), handler);
        tokio::pin!(connection);
        // hyper times out heads once it knows the HTTP version; this also bounds a peer that
        // connects and sends (nearly) nothing, and idle keep-alive connections (HTTP/2 too).
        let idle = async {
            loop {
                let since = *lock(&state.idle_since);
                let busy = state.in_flight.load(Ordering::SeqCst) > 0;
                if !busy && since.elapsed() >= idle_limit {
                    return;
                }
                let now = tokio::time::Instant::now();
                let deadline = since + idle_limit;
                // While a request runs, look again in a while.
                let wake = if deadline > now {
                    deadline
                } else {
                    now + idle_limit / 2
                };
                tokio::time::sleep_until(wake).await;
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            }
            () = idle => {
                tracing::debug!(%peer, "idle for {idle_limit:?}; closing");
            }
            () = shed.cancelled() => {
                tracing::debug!(%peer, "unauthenticated connection shed to make room");
            }
            () = state.close.notified() => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, connection.as_mut()).await;
            }
            () = stopping.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, connection.as_mut()).await;
            }
        }
    }
}

/// One request and what it needs of its connection.
struct Exchange {
    service: Arc<Service>,
    upgrades: Upgrades,
    peer: SocketAddr,
    state: Arc<ConnState>,
    verdicts: Verdicts,
}

impl Exchange {
    async fn handle(self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let version = request.version();
        let framing = match version < Version::HTTP_2 {
            true => self.verdicts.next(),
            false => Framing::Plain,
        };
        if framing == Framing::Ambiguous {
            let error = ApiError::new(
                400,
                "BadRequest",
                "the request has two Content-Length headers, or Content-Length and Transfer-Encoding; send exactly one Content-Length",
            );
            tracing::debug!(peer = %self.peer, code = error.code, reason = %error.message, "request refused");
            let response = json_response(error.status, error_body(error.code, &error.message));
            return Ok(self.state.answered(version, response, false));
        }
        let (response, authenticated) = handle(&self, request).await;
        if authenticated {
            self.state.authenticated();
        }
        let keep = authenticated && framing == Framing::Plain;
        Ok(self.state.answered(version, response, keep))
    }
}

/// Answers one request (a websocket upgrade, or an API call), and whether it authenticated.
async fn handle(exchange: &Exchange, request: Request<Incoming>) -> (Response<Full<Bytes>>, bool) {
    let service = &exchange.service;
    let peer = exchange.peer;
    if is_upgrade(&request) {
        return upgrade(exchange, request);
    }
    let limits = service.limits;
    let timeout = secs(limits.request_timeout_secs);
    let answer = tokio::time::timeout(timeout, async {
        let request = read(request, &limits, service, Source::of(peer.ip())).await?;
        Ok::<_, ApiError>(service.handle_api(&request.0, peer))
    })
    .await;
    match answer {
        Ok(Ok(answer)) => (
            json_response(answer.status, answer.body),
            answer.authenticated,
        ),
        Ok(Err(error)) => {
            tracing::debug!(%peer, code = error.code, reason = %error.message, "request refused");
            (
                json_response(error.status, error_body(error.code, &error.message)),
                false,
            )
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "request refused: not complete in time");
            let message = format!("the request was not complete within {timeout:?}");
            (
                json_response(408, error_body("RequestTimeout", &message)),
                false,
            )
        }
    }
}

/// Reads the head and the whole body, refusing bodies above what the operation allows
/// ([`Limits::body_limit`]) before reading them, and bodies the global budget of unverified
/// bytes or `source`'s share of it cannot hold (503 at once). The reservation lasts until the
/// signature is checked.
async fn read(
    request: Request<Incoming>,
    limits: &Limits,
    service: &Arc<Service>,
    source: Source,
) -> Result<(ApiRequest, BodyReservation), ApiError> {
    let (parts, body) = request.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok());
    let allowed = limits.body_limit(parts.uri.path(), target);
    let too_large = || {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the body is larger than the {allowed} bytes this operation allows"),
        )
    };
    let announced = body.size_hint().lower();
    if announced > allowed as u64 {
        return Err(too_large());
    }
    // Reserve what may arrive: the announced length, or all the operation allows.
    let reserve = match body.size_hint().exact() {
        Some(exact) => exact as usize,
        None => allowed,
    };
    let Some(permit) = service.admission.reserve_body(source, reserve.max(1)) else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            "the gateway is reading too many unauthenticated request bodies at once (from this address, or in all); retry shortly",
        ));
    };
    let body = Limited::new(body, allowed)
        .collect()
        .await
        .map_err(|error| match error.downcast::<hyper::Error>() {
            Ok(error) => ApiError::new(
                400,
                "SerializationException",
                format!("the body could not be read: {error}"),
            ),
            Err(_) => too_large(),
        })?
        .to_bytes();
    Ok((ApiRequest::new(&parts, body)?, permit))
}

fn json_response(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

fn is_upgrade(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Where an upgraded websocket goes.
enum Route {
    /// The relay, for this session id.
    Data(String),
    /// An authenticated agent's control channel, with the digest of the key it signed with.
    Control(String, [u8; 32]),
}

/// Checks and answers a websocket upgrade (`101`), and hands the socket, once hyper lets go
/// of it, to the relay or the agent registry, with the connection's slot under the global
/// cap. A data channel also takes the connection's place in the per-source accounting: it
/// counts as unauthenticated, and may be shed, until the relay accepts the token of its
/// opening message. The connection is kept (`true`) for the upgrade either way.
fn upgrade(exchange: &Exchange, mut request: Request<Incoming>) -> (Response<Full<Bytes>>, bool) {
    let service = exchange.service.clone();
    let peer = exchange.peer;
    let path = request.uri().path().to_owned();
    let refuse = |error: ApiError| (refused(&path, peer, error), false);
    let route = if let Some(id) = path.strip_prefix(crate::net::relay::PATH_PREFIX) {
        Route::Data(id.to_owned())
    } else if let Some(id) = path.strip_prefix(crate::control::PATH_PREFIX) {
        let (parts, body) = request.into_parts();
        let head = match ApiRequest::new(&parts, Bytes::new()) {
            Ok(head) => head,
            Err(error) => return refuse(error),
        };
        let digest = match service.authenticate_agent(&head, id, peer) {
            Ok(digest) => digest,
            // Logged and audited by `authenticate_agent`; the agent reads the reason.
            Err(error) => return (upgrade_refusal(&error), false),
        };
        request = Request::from_parts(parts, body);
        Route::Control(id.to_owned(), digest)
    } else {
        return refuse(ApiError::new(404, "NotFound", "no such websocket endpoint"));
    };
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(ApiError::new(
            400,
            "BadRequest",
            "missing Sec-WebSocket-Key",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgraded = hyper::upgrade::on(&mut request);
    let permit = lock(&exchange.state.permit).take();
    let ticket = match &route {
        Route::Data(_) => lock(&exchange.state.ticket).take(),
        Route::Control(..) => None,
    };
    let span = match &route {
        Route::Data(id) => service
            .sessions
            .span(id)
            .unwrap_or_else(|| tracing::info_span!("data_channel", session_id = %id)),
        Route::Control(id, _) => tracing::info_span!("control_channel", agent_id = %id),
    };
    let task = async move {
        let _permit = permit;
        let upgraded = match upgraded.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%peer, %error, "upgrade failed");
                return;
            }
        };
        let config = crate::net::websocket_config().read_buffer_size(GATEWAY_READ_BUFFER);
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), WsRole::Server, Some(config))
                .await;
        match route {
            Route::Data(session_id) => {
                let shed = ticket
                    .as_ref()
                    .map_or_else(CancellationToken::new, Ticket::shed);
                let opened = Arc::new(AtomicBool::new(false));
                let mut ticket = ticket;
                let on_open = {
                    let opened = opened.clone();
                    move || {
                        tracing::info!(%peer, "data channel attached");
                        opened.store(true, Ordering::SeqCst);
                        if let Some(ticket) = ticket.as_mut() {
                            ticket.authenticated();
                        }
                    }
                };
                // Shed only before it opens: once attached, the relay must see it detach.
                let shed_unopened = async {
                    shed.cancelled().await;
                    if opened.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                };
                tracing::debug!(%peer, "data channel upgraded");
                tokio::select! {
                    served = service.hub.serve_then(ws, session_id.clone(), on_open) => match served {
                        Ok(()) => tracing::info!(%peer, "data channel detached"),
                        Err(refused) => service.data_channel_refused(&session_id, peer, &refused),
                    },
                    () = shed_unopened => tracing::debug!(%peer, "unopened data channel shed to make room"),
                }
            }
            Route::Control(agent_id, digest) => {
                service.serve_agent(ws, agent_id, digest, peer).await
            }
        }
    };
    {
        let mut upgrades = lock(&exchange.upgrades);
        while upgrades.try_join_next().is_some() {}
        upgrades.spawn(task.instrument(span));
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    (response, true)
}

fn refused(path: &str, peer: SocketAddr, error: ApiError) -> Response<Full<Bytes>> {
    tracing::debug!(%peer, path, code = error.code, reason = %error.message, "upgrade refused");
    upgrade_refusal(&error)
}

/// The answer to a refused websocket upgrade: the AWS JSON error in the body, its type also
/// in `x-amzn-ErrorType` (a websocket client may show only the head).
fn upgrade_refusal(error: &ApiError) -> Response<Full<Bytes>> {
    let mut response = json_response(error.status, error_body(error.code, &error.message));
    response
        .headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(error.code));
    response
}

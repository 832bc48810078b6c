//! The gateway's one port on hyper: HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN `h2` with
//! TLS) for the JSON API and KMS, and HTTP/1.1 websocket upgrades for the data and control
//! channels. Every limit on what a peer may send lives here: TLS handshake, header and
//! request timeouts, body size and connection count (see [`Limits`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tracing::Instrument;

use super::api::{JSON, error_body};
use super::auth::{ApiError, ApiRequest};
use super::config::Limits;
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
/// Largest HTTP/2 header list (HTTP/1.1 heads are bounded by hyper's buffer).
const MAX_HEADER_LIST: u32 = 16 * 1024;

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
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST);
    let builder = Arc::new(builder);
    let tls = tls.map(|config| {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let upgrades: Upgrades = Arc::default();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = service.stopping.cancelled() => break,
            Some(_) = connections.join_next() => continue,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => tokio::select! {
                    () = service.stopping.cancelled() => break,
                    accepted = listener.accept() => accepted.map(|accepted| (accepted, permit)),
                },
                Err(_) => break,
            },
        };
        let ((tcp, peer), permit) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let connection = Connection {
            service: service.clone(),
            builder: builder.clone(),
            upgrades: upgrades.clone(),
            peer,
        };
        let tls = tls.clone();
        connections.spawn(async move {
            connection.serve(tcp, tls).await;
            drop(permit);
        });
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
}

impl Connection {
    async fn serve(self, tcp: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return self.serve_io(TokioIo::new(tcp)).await;
        };
        let timeout = secs(self.service.limits.tls_handshake_timeout_secs);
        match tokio::time::timeout(timeout, tls.accept(tcp)).await {
            Ok(Ok(stream)) => self.serve_io(TokioIo::new(stream)).await,
            Ok(Err(error)) => tracing::debug!(peer = %self.peer, %error, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    async fn serve_io<I>(self, io: I)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Connection {
            service,
            builder,
            upgrades,
            peer,
        } = self;
        let stopping = service.stopping.clone();
        let header_timeout = secs(service.limits.header_read_timeout_secs);
        let first_request = Arc::new(tokio::sync::Notify::new());
        let seen = first_request.clone();
        let handler = hyper::service::service_fn(move |request| {
            seen.notify_one();
            handle(service.clone(), upgrades.clone(), peer, request)
        });
        let connection = builder.serve_connection_with_upgrades(io, handler);
        tokio::pin!(connection);
        // hyper times out heads once it knows the HTTP version; this also bounds a peer that
        // connects and sends (nearly) nothing.
        let silent = async {
            if tokio::time::timeout(header_timeout, first_request.notified())
                .await
                .is_err()
            {
                return;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            }
            () = silent => tracing::debug!(%peer, "no request in time; closing"),
            () = stopping.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, connection).await;
            }
        }
    }
}

/// Answers one request: a websocket upgrade, or an API call.
async fn handle(
    service: Arc<Service>,
    upgrades: Upgrades,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if is_upgrade(&request) {
        return Ok(upgrade(service, upgrades, peer, request));
    }
    let limits = service.limits;
    let timeout = secs(limits.request_timeout_secs);
    let answer = tokio::time::timeout(timeout, async {
        let request = read(request, &limits).await?;
        let (status, body) = service.handle_api(&request, peer);
        Ok::<_, ApiError>(json_response(status, body))
    })
    .await;
    Ok(match answer {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            tracing::info!(%peer, code = error.code, reason = %error.message, "request refused");
            json_response(error.status, error_body(error.code, &error.message))
        }
        Err(_) => {
            tracing::info!(%peer, ?timeout, "request refused: not complete in time");
            let message = format!("the request was not complete within {timeout:?}");
            json_response(408, error_body("RequestTimeout", &message))
        }
    })
}

/// Reads the head and the whole body, refusing bodies above the limit before reading them.
async fn read(request: Request<Incoming>, limits: &Limits) -> Result<ApiRequest, ApiError> {
    let (parts, body) = request.into_parts();
    let too_large = || {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the body is larger than {} bytes", limits.max_body_bytes),
        )
    };
    if body.size_hint().lower() > limits.max_body_bytes as u64 {
        return Err(too_large());
    }
    let body = Limited::new(body, limits.max_body_bytes)
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
    ApiRequest::new(&parts, body)
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
    /// An authenticated agent's control channel.
    Control(String),
}

/// Checks and answers a websocket upgrade (`101`), and hands the socket, once hyper lets go
/// of it, to the relay or the agent registry.
fn upgrade(
    service: Arc<Service>,
    upgrades: Upgrades,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let refuse = |error: ApiError| refused(&path, peer, error);
    let route = if let Some(id) = path.strip_prefix(crate::net::relay::PATH_PREFIX) {
        Route::Data(id.to_owned())
    } else if let Some(id) = path.strip_prefix(crate::control::PATH_PREFIX) {
        let (parts, body) = request.into_parts();
        let head = match ApiRequest::new(&parts, Bytes::new()) {
            Ok(head) => head,
            Err(error) => return refuse(error),
        };
        if let Err(error) = service.authenticate_agent(&head, id, peer) {
            return json_response(error.status, error_body(error.code, &error.message));
        }
        request = Request::from_parts(parts, body);
        Route::Control(id.to_owned())
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
    let span = match &route {
        Route::Data(id) => service
            .sessions
            .span(id)
            .unwrap_or_else(|| tracing::info_span!("data_channel", session_id = %id)),
        Route::Control(id) => tracing::info_span!("control_channel", agent_id = %id),
    };
    let task = async move {
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
                tracing::info!(%peer, "data channel attached");
                if let Err(refused) = service.hub.serve(ws, session_id.clone()).await {
                    service.data_channel_refused(&session_id, peer, &refused);
                }
                tracing::info!(%peer, "data channel detached");
            }
            Route::Control(agent_id) => service.serve_agent(ws, agent_id, peer).await,
        }
    };
    {
        let mut upgrades = lock(&upgrades);
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
    response
}

fn refused(path: &str, peer: SocketAddr, error: ApiError) -> Response<Full<Bytes>> {
    tracing::info!(%peer, path, code = error.code, reason = %error.message, "upgrade refused");
    json_response(error.status, error_body(error.code, &error.message))
}

//! The client side of the JSON API calls the agent and the client make: one signed `POST` on a
//! fresh connection through hyper, HTTP/2 when TLS negotiates it (ALPN `h2`), HTTP/1.1
//! otherwise. Answers are read whole but never beyond 1 MiB, and the whole exchange
//! has a deadline, so a hostile or stuck endpoint cannot hold memory or a caller forever.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{TlsConfig, TlsMismatch};

/// Largest answer body accepted (API answers are a few hundred bytes; KMS blobs a few KiB).
pub(crate) const MAX_BODY: usize = 1 << 20;

/// What went wrong with a call's transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Connecting or the TLS handshake failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The endpoint's host is not a name TLS can check.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The HTTP exchange failed (malformed answer, connection closed early, …).
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built from the endpoint and path.
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The answer body is above 1 MiB.
    #[error("the answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// No complete answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The URL's scheme does not match what the endpoint speaks, or its certificate is not
    /// trusted: the message says what to change.
    #[error(transparent)]
    Tls(#[from] super::TlsMismatch),
}

/// Why an endpoint URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Neither `http://` nor `https://`.
    #[error("{0:?} is not an http:// or https:// URL")]
    Scheme(String),
    /// The port is not a number from 0 to 65535.
    #[error("{0:?} has a bad port")]
    Port(String),
    /// There is no host.
    #[error("{0:?} names no host")]
    NoHost(String),
}

/// The parts of an `http://` or `https://` endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether the scheme is `https`.
    pub tls: bool,
    /// Host name or address (brackets removed from IPv6 literals).
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
}

impl Endpoint {
    /// Parses `http(s)://host[:port][/]`.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(EndpointError::Scheme(url.to_owned()));
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse()
                    .map_err(|_| EndpointError::Port(url.to_owned()))?;
                (host, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(EndpointError::NoHost(url.to_owned()));
        }
        Ok(Endpoint {
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port` as the Host header carries it.
    pub fn authority(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// The websocket URL of `path` on this endpoint.
    pub fn websocket_url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{path}", self.authority())
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.authority())
    }
}

/// A status and body returned by [`post`].
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// Posts `body` to `path` of `endpoint` with `headers` (which must include Host, as signed)
/// on a fresh connection and reads the answer, all within `timeout`.
pub(crate) async fn post(
    endpoint: &Endpoint,
    tls: &TlsConfig,
    path: &str,
    headers: &[(String, String)],
    body: Bytes,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let mut request = hyper::Request::post(endpoint.url(path));
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(Full::new(body))?;
    tokio::time::timeout(timeout, exchange(endpoint, tls, request))
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn exchange(
    endpoint: &Endpoint,
    tls: &TlsConfig,
    request: hyper::Request<Full<Bytes>>,
) -> Result<HttpResponse, HttpError> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
    let _ = tcp.set_nodelay(true);
    if !endpoint.tls {
        let first = Arc::new(std::sync::OnceLock::new());
        let sniffed = Sniff {
            inner: tcp,
            first: first.clone(),
        };
        return send(TokioIo::new(sniffed), false, request)
            .await
            .map_err(|error| match error {
                // A TLS server answers a plain request with an alert record (or nothing).
                HttpError::Http(_)
                    if first
                        .get()
                        .is_some_and(|bytes: &Vec<u8>| TlsMismatch::looks_like_tls(bytes)) =>
                {
                    HttpError::Tls(TlsMismatch::SpeaksTls)
                }
                other => other,
            });
    }
    let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
        .map_err(|_| HttpError::ServerName(endpoint.host.clone()))?;
    let mut config = (*tls.client()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|error| match TlsMismatch::diagnose(&error, tls) {
            Some(mismatch) => HttpError::Tls(mismatch),
            None => HttpError::Io(error),
        })?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    send(TokioIo::new(stream), h2, request).await
}

/// A plain connection that keeps the first bytes the server sent, to tell a TLS server's
/// alert from a malformed HTTP answer.
struct Sniff {
    inner: TcpStream,
    first: Arc<std::sync::OnceLock<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Sniff {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() && self.first.get().is_none() {
            let _ = self.first.set(read[..read.len().min(8)].to_vec());
        }
        poll
    }
}

impl tokio::io::AsyncWrite for Sniff {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Aborts the connection task when the exchange ends, whichever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send<I>(
    io: I,
    h2: bool,
    mut request: hyper::Request<Full<Bytes>>,
) -> Result<HttpResponse, HttpError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (response, _connection) = if h2 {
        // HTTP/2 carries the (signed) host as `:authority`, from the URI.
        request.headers_mut().remove(hyper::header::HOST);
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
        let connection = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        (sender.send_request(request).await?, connection)
    } else {
        // HTTP/1.1 wants the origin form on the request line; the Host header carries the rest.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        *request.uri_mut() = path.parse().map_err(hyper::http::Error::from)?;
        let (mut sender, connection) = http1::handshake(io).await?;
        let connection = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        (sender.send_request(request).await?, connection)
    };
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|error| match error.downcast::<hyper::Error>() {
            Ok(error) => HttpError::Http(*error),
            Err(_) => HttpError::TooLarge,
        })?
        .to_bytes();
    Ok(HttpResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_defaults_and_refusals() {
        let plain = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(plain.authority(), "127.0.0.1:8080");
        assert_eq!(
            plain.websocket_url("/v1/x"),
            "ws://127.0.0.1:8080/v1/x".to_owned()
        );
        let tls = Endpoint::parse("https://localhost/").unwrap();
        assert_eq!((tls.tls, tls.port), (true, 443));
        assert_eq!(tls.url("/"), "https://localhost:443/");
        assert_eq!(Endpoint::parse("https://[::1]:9/").unwrap().host, "::1");
        assert!(matches!(
            Endpoint::parse("ftp://x"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://:80"),
            Err(EndpointError::NoHost(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://h:port"),
            Err(EndpointError::Port(_))
        ));
    }
}

//! The little HTTP/1.1 the system needs: the gateway reads JSON API requests and websocket
//! upgrades on one port, and the client and agent post signed JSON requests to it.
//!
//! Bodies are sized by `Content-Length` only (what the AWS CLI and SDKs send for these calls);
//! heads and bodies have hard size limits so that no request can make either side buffer
//! without bound. Parsing is httparse's, already in the tree through tungstenite.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::TlsConfig;

/// Largest request or response head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted (API calls are a few hundred bytes; KMS blobs a few kilobytes).
pub(crate) const MAX_BODY: usize = 1 << 20;
const MAX_HEADERS: usize = 64;

/// What went wrong reading a request or response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The connection failed or closed early.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not an HTTP/1.1 message this side accepts.
    #[error("malformed HTTP message: {0}")]
    Malformed(&'static str),
    /// Head or body above the limits.
    #[error("HTTP message too large")]
    TooLarge,
    /// The peer did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A parsed request head plus its body.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    /// The raw query string (no `?`), possibly empty.
    pub query: String,
    /// Headers in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (empty for upgrades).
    pub body: Bytes,
}

impl HttpRequest {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether this is a websocket upgrade request.
    pub fn is_upgrade(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
    }
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Reads one request from `stream`; `Ok(None)` when the peer closed before sending one.
/// Bytes after the request stay in `buffer` (keep-alive, or a websocket's first frames).
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Result<Option<HttpRequest>, HttpError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request
            .parse(buffer)
            .map_err(|_| HttpError::Malformed("bad request head"))?
        {
            httparse::Status::Complete(head_len) => {
                let method = request.method.unwrap_or("").to_owned();
                let target = request.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let (path, query) = (path.to_owned(), query.to_owned());
                let headers = owned_headers(request.headers)?;
                buffer.advance(head_len);
                let body = read_body(stream, buffer, &headers).await?;
                return Ok(Some(HttpRequest {
                    method,
                    path,
                    query,
                    headers,
                    body,
                }));
            }
            httparse::Status::Partial => {
                if buffer.len() >= MAX_HEAD {
                    return Err(HttpError::TooLarge);
                }
                if stream.read_buf(buffer).await? == 0 {
                    return match buffer.is_empty() {
                        true => Ok(None),
                        false => Err(HttpError::Malformed("connection closed inside a head")),
                    };
                }
            }
        }
    }
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Result<Vec<(String, String)>, HttpError> {
    headers
        .iter()
        .map(|header| {
            let value = std::str::from_utf8(header.value)
                .map_err(|_| HttpError::Malformed("header value is not UTF-8"))?;
            Ok((header.name.to_owned(), value.to_owned()))
        })
        .collect()
}

async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    headers: &[(String, String)],
) -> Result<Bytes, HttpError> {
    if header(headers, "transfer-encoding").is_some() {
        return Err(HttpError::Malformed("chunked bodies are not accepted"));
    }
    let length = match header(headers, "content-length") {
        None => 0,
        Some(value) => value
            .trim()
            .parse::<usize>()
            .map_err(|_| HttpError::Malformed("bad Content-Length"))?,
    };
    if length > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    while buffer.len() < length {
        if stream.read_buf(buffer).await? == 0 {
            return Err(HttpError::Malformed("connection closed inside a body"));
        }
    }
    Ok(buffer.split_to(length).freeze())
}

/// Writes a complete response with a body.
pub(crate) async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A stream that first yields bytes already read from it (what followed a request head).
pub(crate) struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("{url:?} has a bad port"))?;
                (host, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
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
}

/// A status and body returned by [`post`].
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// Posts `body` to `path` of `endpoint` with `headers` (which must include Host) on a fresh
/// connection and reads the answer.
pub(crate) async fn post(
    endpoint: &Endpoint,
    tls: &TlsConfig,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let exchange = async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        let _ = tcp.set_nodelay(true);
        match endpoint.tls {
            false => exchange(tcp, path, headers, body).await,
            true => {
                let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                    .map_err(|_| HttpError::Malformed("bad server name"))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.client()))
                    .connect(name, tcp)
                    .await?;
                exchange(stream, path, headers, body).await
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<HttpResponse, HttpError> {
    let mut head = format!("POST {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;

    let mut buffer = BytesMut::with_capacity(4096);
    loop {
        let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut parsed);
        match response
            .parse(&buffer)
            .map_err(|_| HttpError::Malformed("bad response head"))?
        {
            httparse::Status::Complete(head_len) => {
                let status = response.code.unwrap_or(0);
                let headers = owned_headers(response.headers)?;
                buffer.advance(head_len);
                let body = read_body(&mut stream, &mut buffer, &headers).await?;
                return Ok(HttpResponse { status, body });
            }
            httparse::Status::Partial => {
                if buffer.len() >= MAX_HEAD {
                    return Err(HttpError::TooLarge);
                }
                if stream.read_buf(&mut buffer).await? == 0 {
                    return Err(HttpError::Malformed("connection closed before an answer"));
                }
            }
        }
    }
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
        assert_eq!(Endpoint::parse("https://[::1]:9/").unwrap().host, "::1");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://:80").is_err());
        assert!(Endpoint::parse("http://h:port").is_err());
    }

    #[tokio::test]
    async fn requests_are_read_with_bodies_and_limits() {
        let wire = b"POST /?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET";
        let mut stream = &wire[..];
        let mut buffer = BytesMut::new();
        let request = read_request(&mut stream, &mut buffer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/")
        );
        assert_eq!(request.query, "a=1");
        assert_eq!(&request.body[..], b"abc");
        assert_eq!(&buffer[..], b"GET", "bytes after the request are kept");

        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = &chunked[..];
        assert!(matches!(
            read_request(&mut stream, &mut BytesMut::new()).await,
            Err(HttpError::Malformed(_))
        ));
        let huge = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let mut stream = huge.as_bytes();
        assert!(matches!(
            read_request(&mut stream, &mut BytesMut::new()).await,
            Err(HttpError::TooLarge)
        ));
        let endless = vec![b'a'; MAX_HEAD + 10];
        let mut stream = &endless[..];
        assert!(
            read_request(&mut stream, &mut BytesMut::new())
                .await
                .is_err()
        );
        let mut empty: &[u8] = b"";
        assert!(
            read_request(&mut empty, &mut BytesMut::new())
                .await
                .unwrap()
                .is_none()
        );
    }
}

//! Opening one websocket to the stream URL and sending the opening text message (PROTOCOL.md §4,
//! §5.2). Errors are sorted into refusals (final) and failures (worth retrying).

use std::time::Duration;

use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{NetError, TlsConfig};

/// The websocket the driver owns.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest websocket message accepted: a 64 KiB payload with its header and cipher overhead
/// fits many times over; anything bigger is not a frame of this protocol.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

pub(crate) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Dials `url` with no extra headers (as the reference client does) and sends `opening`.
pub(crate) async fn dial(
    url: &str,
    tls: &TlsConfig,
    opening: String,
    timeout: Duration,
) -> Result<Ws, NetError> {
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        Some(websocket_config()),
        true,
        Some(Connector::Rustls(tls.client())),
    );
    let (mut ws, _response) = match tokio::time::timeout(timeout, connect).await {
        Err(_) => return Err(NetError::ConnectTimeout(timeout)),
        Ok(result) => result.map_err(|error| match &error {
            // Untrusted certificate, or a `wss://` URL for a plain-text server.
            tungstenite::Error::Io(io) => match super::TlsMismatch::diagnose(io, tls) {
                Some(mismatch) => NetError::Connect(Box::new(mismatch)),
                None => classify(error),
            },
            _ => classify(error),
        })?,
    };
    ws.send(Message::text(opening)).await.map_err(classify)?;
    Ok(ws)
}

/// Sorts a websocket error into a refusal (do not retry with the same token) or a failure.
pub(crate) fn classify(error: tungstenite::Error) -> NetError {
    use tungstenite::Error;
    match error {
        Error::Url(error) => NetError::InvalidUrl(error.to_string()),
        Error::Http(response) if matches!(response.status().as_u16(), 401 | 403 | 404) => {
            NetError::Refused(format!("HTTP {} on upgrade", response.status()))
        }
        other => NetError::Connect(Box::new(other)),
    }
}

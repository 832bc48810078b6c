//! Local port forwarding at the client: a listener on loopback, each accepted connection one
//! smux stream (or, with agents too old for smux, one connection at a time in basic mode).

use std::future::Future;
use std::time::Instant;

use tokio::net::TcpListener;

use super::SessionSummary;
use crate::forward::{self, ForwardEnd, Streams};
use crate::net::{Connection, Ending};
use crate::session::PortKind;
use crate::smux::{Mux, MuxConfig};
use crate::version;

/// Forwards connections accepted on `listener` over the session until it ends, or until
/// `stop` completes: then what the local connections sent is delivered, they are closed, and
/// the session is closed, which tells the agent to end it. `on_stream` sees every local
/// connection open and close.
pub async fn run_port_forwarding(
    connection: Connection,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    on_stream: impl FnMut(forward::StreamEvent) + Send + 'static,
) -> std::io::Result<SessionSummary> {
    let started = Instant::now();
    let info = connection.info().clone();
    let agent_version = info.peer_version.clone().unwrap_or_default();
    let local =
        PortKind::from_properties(info.properties.as_ref()) == PortKind::LocalPortForwarding;
    let (reader, writer) = connection.split();
    // Totals of closed connections: bytes read from them (sent) and written to them.
    let counters = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let totals = counters.clone();
    let mut on_stream = on_stream;
    let report = move |event: forward::StreamEvent| {
        if event.closed {
            let mut totals = crate::net::runtime::lock(&totals);
            totals.0 += event.bytes_in;
            totals.1 += event.bytes_out;
        }
        on_stream(event);
    };
    let streams = Streams::Accept(listener);
    let end = if local && version::client_uses_mux(&agent_version) {
        let config = MuxConfig::new(!version::client_disables_smux_keepalive(&agent_version));
        let mux = Mux::client(config, std::time::Instant::now());
        forward::run_mux(reader, writer, mux, streams, stop, report).await
    } else {
        forward::run_basic(reader, writer, streams, false, stop, report).await
    };
    let (sent, received) = *crate::net::runtime::lock(&counters);
    let ending = match end {
        ForwardEnd::Session(ending) | ForwardEnd::Stopped(ending) => ending,
        ForwardEnd::Terminated => Ending::Closed,
        ForwardEnd::Mux(error) => Ending::Failed(std::sync::Arc::new(
            crate::net::NetError::Connect(error.into()),
        )),
    };
    Ok(SessionSummary {
        exit_code: None,
        ending,
        bytes_sent: sent,
        bytes_received: received,
        duration: started.elapsed(),
    })
}

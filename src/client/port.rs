//! Local port forwarding at the client: a listener on loopback, each accepted connection one
//! smux stream (or, with agents too old for smux, one connection at a time in basic mode).

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::SessionSummary;
use crate::forward::{self, ForwardEnd, Streams};
use crate::net::{Connection, Ending, Incoming};
use crate::payload::Flag;
use crate::smux::{Mux, MuxConfig};
use crate::version;

/// Forwards connections accepted on `listener` over the session until it ends. `on_stream`
/// sees every local connection open and close.
pub async fn run_port_forwarding(
    connection: Connection,
    listener: TcpListener,
    on_stream: impl FnMut(forward::StreamEvent) + Send + 'static,
) -> std::io::Result<SessionSummary> {
    let started = Instant::now();
    let info = connection.info().clone();
    let agent_version = info.peer_version.clone().unwrap_or_default();
    let local = info
        .properties
        .as_ref()
        .and_then(|properties| properties.get("type"))
        .and_then(|kind| kind.as_str())
        == Some("LocalPortForwarding");
    let (reader, writer) = connection.split();
    let (end, sent, received) = if local && version::client_uses_mux(&agent_version) {
        let mut config = MuxConfig::default();
        config.keep_alive = !version::client_disables_smux_keepalive(&agent_version);
        let mux = Mux::client(config, std::time::Instant::now());
        let counters = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
        let totals = counters.clone();
        let mut on_stream = on_stream;
        let end = forward::run_mux(reader, writer, mux, Streams::Accept(listener), move |event| {
            if event.closed {
                let mut totals = crate::gateway::lock(&totals);
                totals.0 += event.bytes_in;
                totals.1 += event.bytes_out;
            }
            on_stream(event);
        })
        .await;
        let (sent, received) = *crate::gateway::lock(&counters);
        (end, sent, received)
    } else {
        basic(reader, writer, listener).await
    };
    let ending = match end {
        ForwardEnd::Session(ending) => ending,
        ForwardEnd::Terminated => Ending::Closed,
        ForwardEnd::Mux(error) => Ending::Failed(std::sync::Arc::new(
            crate::net::NetError::Connect(error),
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

/// Basic mode: one local connection at a time; `DisconnectToPort` when it closes.
async fn basic(
    mut reader: crate::net::ReadHalf,
    mut writer: crate::net::WriteHalf,
    listener: TcpListener,
) -> (ForwardEnd, u64, u64) {
    let (mut sent, mut received) = (0u64, 0u64);
    let mut buffer = vec![0; 32 * 1024];
    loop {
        let (mut tcp, _peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            incoming = reader.recv() => match incoming {
                Some(Incoming::Ended(ending)) => return (ForwardEnd::Session(ending), sent, received),
                None => return (ForwardEnd::Session(Ending::Closed), sent, received),
                _ => continue, // data with no local connection has nowhere to go
            },
        };
        let _ = tcp.set_nodelay(true);
        loop {
            tokio::select! {
                read = tcp.read(&mut buffer) => match read {
                    Ok(n) if n > 0 => {
                        sent += n as u64;
                        if writer.write_all(&buffer[..n]).await.is_err() {
                            return (ForwardEnd::Session(Ending::Closed), sent, received);
                        }
                    }
                    _ => {
                        let _ = writer.send_flag(Flag::DisconnectToPort).await;
                        break;
                    }
                },
                incoming = reader.recv() => match incoming {
                    Some(Incoming::Data(bytes)) => {
                        received += bytes.len() as u64;
                        if tcp.write_all(&bytes).await.is_err() {
                            let _ = writer.send_flag(Flag::DisconnectToPort).await;
                            break;
                        }
                    }
                    Some(Incoming::Flag(Flag::ConnectToPortError)) => {
                        eprintln!("\nConnection to destination port failed, check SSM Agent logs.");
                        break;
                    }
                    Some(Incoming::Ended(ending)) => return (ForwardEnd::Session(ending), sent, received),
                    None => return (ForwardEnd::Session(Ending::Closed), sent, received),
                    Some(_) => {}
                },
            }
        }
    }
}

//! `Port` sessions at the agent: check the destination, then forward in mux or basic mode.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::{Context, Outcome};
use crate::control::{ControlMessage, EndReason, StreamReport};
use crate::document::{AgentSessionRequest, PortKind};
use crate::forward::{self, ForwardEnd, StreamEvent, Streams};
use crate::net::runtime::lock;
use crate::net::{Connection, Ending};
use crate::smux::{Mux, MuxConfig};
use crate::version;

/// Whether `ip` is link-local or an instance-metadata address, refused by default.
pub(crate) fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    == "fd00:ec2::254"
                        .parse::<std::net::Ipv6Addr>()
                        .expect("valid literal")
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
    }
}

pub(crate) async fn run(
    context: &Arc<Context>,
    connection: Connection,
    request: &AgentSessionRequest,
    cancel: CancellationToken,
) -> Outcome {
    let Some(target) = request.session.port.clone() else {
        return super::shell::refuse(connection, "the document names no port".into()).await;
    };
    let host = target.host.clone().unwrap_or_else(|| "localhost".into());
    let destination = match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]:{}", target.port),
        false => format!("{host}:{}", target.port),
    };
    if !context.settings.allow_link_local {
        let lookup = destination.clone();
        let addresses = tokio::task::spawn_blocking(move || {
            lookup
                .to_socket_addrs()
                .map(|found| found.collect::<Vec<_>>())
        })
        .await;
        if let Ok(Ok(addresses)) = addresses
            && addresses
                .iter()
                .any(|address| is_link_local_or_metadata(address.ip()))
        {
            return super::shell::refuse(
                connection,
                format!("{destination} is a link-local or metadata address; this agent refuses it"),
            )
            .await;
        }
    }
    let peer_version = connection.info().peer_version.clone().unwrap_or_default();
    let session_id = request.session_id.clone();
    let outbox = context.outbox.clone();
    // Stream reports are audit records: when the outbox is full, one waits in a task of its
    // own rather than being dropped, and the session ends only after they are queued, so
    // they precede its report.
    let waiting: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let waiting_reports = waiting.clone();
    let report = move |event: StreamEvent| {
        let message = ControlMessage::Stream(StreamReport {
            session_id: session_id.clone(),
            stream_id: event.stream_id,
            destination: event.destination,
            closed: event.closed,
            bytes_to_destination: event.bytes_out,
            bytes_from_destination: event.bytes_in,
            duration_ms: event.duration_ms,
            detail: event.detail,
        });
        if let Err(TrySendError::Full(message)) = outbox.try_send(message) {
            let outbox = outbox.clone();
            let task = tokio::spawn(async move {
                let _ = outbox.send(message).await;
            });
            lock(&waiting_reports).push(task);
        }
    };
    let local = target.kind == PortKind::LocalPortForwarding;
    let (reader, writer) = connection.split();
    let stop = cancel.cancelled();
    let end = if local && version::agent_uses_mux(&peer_version) {
        let config = MuxConfig::new(!version::agent_disables_smux_keepalive(&peer_version));
        let mux = Mux::server(config, std::time::Instant::now());
        forward::run_mux(
            reader,
            writer,
            mux,
            Streams::Dial(destination),
            stop,
            report,
        )
        .await
    } else {
        forward::run_basic(
            reader,
            writer,
            Streams::Dial(destination),
            !local,
            stop,
            report,
        )
        .await
    };
    let waiting = std::mem::take(&mut *lock(&waiting));
    for task in waiting {
        let _ = task.await;
    }
    match end {
        ForwardEnd::Session(ending) => Outcome::from_ending(&ending),
        ForwardEnd::Terminated => Outcome {
            reason: EndReason::ClientExit,
            exit_code: None,
            output: String::new(),
        },
        ForwardEnd::Stopped(ending) => Outcome {
            reason: EndReason::Terminated,
            exit_code: None,
            output: match ending {
                Ending::Closed => String::new(),
                unclean => unclean.to_string(),
            },
        },
        ForwardEnd::Mux(error) => Outcome::failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_metadata_addresses_are_recognised() {
        for refused in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(
                is_link_local_or_metadata(refused.parse().unwrap()),
                "{refused}"
            );
        }
        for allowed in ["127.0.0.1", "10.0.0.1", "::1", "2001:db8::1"] {
            assert!(
                !is_link_local_or_metadata(allowed.parse().unwrap()),
                "{allowed}"
            );
        }
    }
}

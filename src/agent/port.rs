//! `Port` sessions at the agent: check the destination, then forward in mux or basic mode.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
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

/// Whether `ip` is link-local or an instance-metadata address, refused by default: also in
/// the IPv6 forms that reach an IPv4 address (mapped, IPv4-compatible, SIIT, NAT64, 6to4,
/// Teredo).
pub(crate) fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || embedded_ipv4(v6).iter().any(Ipv4Addr::is_link_local)
        }
    }
}

/// The IPv4 addresses an IPv6 address may stand for: `::ffff:0:0/96` (mapped), `::/96`
/// (IPv4-compatible), `::ffff:0:0:0/96` (SIIT, RFC 2765), `64:ff9b::/96` (NAT64),
/// `64:ff9b:1::/48` (local NAT64, every RFC 6052 prefix length it allows), `2002::/16` (6to4)
/// and `2001::/32` (Teredo: the server's address, and the client's, stored inverted).
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let b = v6.octets();
    let v4 = |octets: [u8; 4]| Ipv4Addr::from(octets);
    let last = v4([b[12], b[13], b[14], b[15]]);
    let s = v6.segments();
    let mut found = Vec::new();
    if v6.to_ipv4_mapped().is_some() || s[..6] == [0; 6] || s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        found.push(last);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        found.push(last);
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        // RFC 6052 §2.2: the IPv4 bits skip octet 8 (the "u" octet).
        found.extend([
            v4([b[6], b[7], b[9], b[10]]),
            v4([b[7], b[9], b[10], b[11]]),
            v4([b[9], b[10], b[11], b[12]]),
            last,
        ]);
    }
    if s[0] == 0x2002 {
        found.push(v4([b[2], b[3], b[4], b[5]]));
    }
    if s[..2] == [0x2001, 0] {
        found.push(v4([b[4], b[5], b[6], b[7]]));
        found.push(v4([!b[12], !b[13], !b[14], !b[15]]));
    }
    found
}

/// Resolves `host` once, with `resolve`, into the addresses the session will dial (and only
/// those: a name is never looked up again, so it cannot rebind). Err, to tell the client,
/// when the lookup fails or finds nothing, or — unless `allow_link_local` — when any address
/// is link-local or metadata.
pub(crate) fn checked_addresses(
    host: &str,
    port: u16,
    allow_link_local: bool,
    resolve: impl FnOnce(&str, u16) -> std::io::Result<Vec<SocketAddr>>,
) -> Result<Vec<SocketAddr>, String> {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let addresses = resolve(name, port).map_err(|error| {
        format!("cannot resolve {host} ({error}): the agent refuses destinations it cannot check")
    })?;
    if addresses.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if !allow_link_local
        && let Some(refused) = addresses
            .iter()
            .find(|address| is_link_local_or_metadata(address.ip()))
    {
        return Err(format!(
            "{host}:{port} ({}) is a link-local or metadata address; this agent refuses it",
            refused.ip()
        ));
    }
    Ok(addresses)
}

/// The system resolver.
fn system_resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    (host, port).to_socket_addrs().map(Iterator::collect)
}

/// Ends a port session the agent will not run: no byte goes into the session (the client
/// would read it as port data, e.g. smux); the reason reaches the client as the
/// `channel_closed` output the gateway sends once the report says so.
async fn refuse(connection: Connection, why: String) -> Outcome {
    let (_, writer) = connection.split();
    let _ = writer.close().await;
    Outcome::failed(why)
}

pub(crate) async fn run(
    context: &Arc<Context>,
    connection: Connection,
    request: &AgentSessionRequest,
    cancel: CancellationToken,
) -> Outcome {
    let Some(target) = request.session.port.clone() else {
        return refuse(connection, "the document names no port".into()).await;
    };
    let host = target.host.clone().unwrap_or_else(|| "localhost".into());
    let destination = match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]:{}", target.port),
        false => format!("{host}:{}", target.port),
    };
    let allow = context.settings.allow_link_local;
    let lookup = host.clone();
    let checked = tokio::task::spawn_blocking(move || {
        checked_addresses(&lookup, target.port, allow, system_resolve)
    })
    .await
    .unwrap_or_else(|error| Err(format!("resolving {host}: {error}")));
    let addresses = match checked {
        Ok(addresses) => addresses,
        Err(why) => return refuse(connection, why).await,
    };
    let streams = || Streams::Dial {
        destination: destination.clone(),
        addresses: addresses.clone(),
    };
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
        forward::run_mux(reader, writer, mux, streams(), stop, report).await
    } else {
        forward::run_basic(reader, writer, streams(), !local, stop, report).await
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
            recording: None,
        },
        ForwardEnd::Stopped(ending) => Outcome {
            reason: EndReason::Terminated,
            exit_code: None,
            output: match ending {
                Ending::Closed => String::new(),
                unclean => unclean.to_string(),
            },
            recording: None,
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
            // IPv4-compatible, NAT64 (well-known and local-use prefixes), 6to4.
            "::a9fe:a9fe",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:a9fe:a9:fe00::",
            "2002:a9fe:a9fe::1",
            // SIIT; Teredo with the metadata address as server, and as (inverted) client.
            "::ffff:0:a9fe:a9fe",
            "2001:0:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:5601:5601",
        ] {
            assert!(
                is_link_local_or_metadata(refused.parse().unwrap()),
                "{refused}"
            );
        }
        for allowed in [
            "127.0.0.1",
            "10.0.0.1",
            "::1",
            "::",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::ffff:0:a00:1",
            // RFC 4380's example: server 65.54.227.120, client 192.0.2.45.
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(
                !is_link_local_or_metadata(allowed.parse().unwrap()),
                "{allowed}"
            );
        }
    }

    #[test]
    fn a_destination_is_resolved_once_and_dialled_as_checked() {
        // A rebinding name: harmless at the first lookup, the metadata address after.
        let mut answers = vec![
            vec!["169.254.169.254:80".parse().unwrap()],
            vec!["127.0.0.1:80".parse().unwrap()],
        ];
        let mut lookups = 0;
        let checked = checked_addresses("rebind.example", 80, false, |name, port| {
            lookups += 1;
            assert_eq!((name, port), ("rebind.example", 80));
            Ok(answers.pop().unwrap())
        });
        assert_eq!(checked, Ok(vec!["127.0.0.1:80".parse().unwrap()]));
        assert_eq!(lookups, 1, "the name was looked up more than once");
        // Every address is checked, not only the first.
        let mixed = checked_addresses("mixed.example", 80, false, |_, port| {
            Ok(vec![
                SocketAddr::from(([127, 0, 0, 1], port)),
                "[64:ff9b::a9fe:a9fe]:80".parse().unwrap(),
            ])
        });
        assert!(mixed.unwrap_err().contains("link-local"));
        // A failed lookup refuses, with the reason.
        let failed = checked_addresses("nowhere.invalid", 80, false, |_, _| {
            Err(std::io::Error::other("no such host"))
        });
        assert!(
            failed
                .unwrap_err()
                .contains("cannot resolve nowhere.invalid")
        );
        let empty = checked_addresses("empty.example", 80, true, |_, _| Ok(Vec::new()));
        assert!(empty.is_err());
        // Allowed explicitly, link-local addresses are dialled; bracketed literals resolve.
        let allowed = checked_addresses("[fe80::1]", 80, true, system_resolve);
        assert_eq!(allowed, Ok(vec!["[fe80::1]:80".parse().unwrap()]));
    }
}

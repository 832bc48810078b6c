//! The tokio adapters on real loopback sockets, through the relay: handshakes, every payload
//! type, TLS, resume after each kind of connection loss, back-pressure, refusals and a hostile
//! peer.

#![cfg(feature = "net")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ssm_session::net::{self, Ending, Incoming, NetError, TokenError, TokenFuture};
use ssm_session::payload::{ExitCode, Flag, TerminalSize};
use ssm_session::session::{AgentConfig, ClientConfig, Role, SessionType};
use support::loopback::{Loopback, Pattern, Transfer, exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);

fn transfer(bytes: u64) -> Transfer {
    Transfer {
        bytes,
        chunk: 64 * 1024,
        sha256: false,
    }
}

/// Opens a pair for `encrypt`/`compat`, moves `bytes` each way, optionally dropping `kill`'s
/// connection once the client has a quarter; returns the reconnections counted by both ends.
/// With `bytes` over twice the send window (8 MiB, or 512 KiB on the reference wire), both ends
/// still have data to move after the kill, so the dropped side must resume to finish.
async fn round_trip(
    lo: &mut Loopback,
    encrypt: bool,
    compat: bool,
    bytes: u64,
    kill: Option<Kill>,
) -> u64 {
    lo.new_session();
    let (client_config, agent_config) = lo.configs(encrypt, compat);
    let (client, agent) = timeout(LIMIT, lo.connect_pair(client_config, agent_config))
        .await
        .expect("handshake in time")
        .expect("both ends connect");
    assert_eq!(client.info().encrypted, encrypt);
    assert_eq!(agent.info().encrypted, encrypt);
    assert_eq!(client.info().extensions, !compat);
    let counters = [client.counters(), agent.counters()];
    let (fire, fired) = oneshot::channel();
    let run = tokio::spawn(exchange(
        client,
        agent,
        transfer(bytes),
        Some((bytes / 4, fire)),
    ));
    if fired.await.is_ok() {
        match kill {
            Some(Kill::Side(side)) => {
                assert!(lo.relay.as_ref().unwrap().disconnect(&lo.session_id, side))
            }
            Some(Kill::Relay) => lo.restart_relay().await,
            None => {}
        }
    }
    let (up, down) = timeout(LIMIT, run)
        .await
        .expect("transfer in time")
        .unwrap()
        .expect("intact");
    assert_eq!((up.received, down.received), (bytes, bytes));
    counters.iter().map(|c| c.reconnects()).sum()
}

/// A NonInteractiveCommands session with separate stdout and stderr.
fn command_session(lo: &Loopback) -> (ClientConfig, AgentConfig) {
    let (client, mut agent) = lo.configs(false, false);
    agent.session_type = SessionType::NonInteractiveCommands;
    agent.properties = None;
    agent.separate_output_stream = true;
    (client, agent)
}

#[derive(Clone, Copy)]
enum Kill {
    Side(Role),
    Relay,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_session_without_encryption() {
    let mut lo = Loopback::start(false).await;
    let (client_config, agent_config) = lo.configs(false, false);
    let (client, agent) = lo.connect_pair(client_config, agent_config).await.unwrap();
    assert_eq!(client.info().session_type, SessionType::Port);
    assert_eq!(
        client.info().properties.as_ref().unwrap()["portNumber"],
        "22"
    );
    assert!(!client.info().legacy);
    drop((client, agent));
    assert_eq!(round_trip(&mut lo, false, false, 1 << 20, None).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_shell_session() {
    let mut lo = Loopback::start(false).await;
    assert_eq!(round_trip(&mut lo, true, false, 1 << 20, None).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_wire_both_ways() {
    let mut lo = Loopback::start(false).await;
    assert_eq!(round_trip(&mut lo, true, true, 256 << 10, None).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_generated_certificate() {
    let mut lo = Loopback::start(true).await;
    assert!(lo.url().starts_with("wss://localhost:"));
    assert_eq!(round_trip(&mut lo, true, false, 1 << 20, None).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_an_untrusted_certificate() {
    let lo = Loopback::start(true).await;
    let token = lo.tokens.issue(&lo.session_id, Role::Client);
    let (client_config, _) = lo.configs(false, false);
    // The webpki roots do not include the generated certificate.
    let options = net::Options::default();
    let error = net::connect(&lo.url(), &token, client_config, options)
        .await
        .unwrap_err();
    assert!(
        matches!(error, NetError::Connect(ref cause) if cause.to_string().contains("certificate")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_type_end_to_end() {
    let lo = Loopback::start(false).await;
    let (client_config, agent_config) = command_session(&lo);
    let (mut client, mut agent) = lo.connect_pair(client_config, agent_config).await.unwrap();
    assert_eq!(
        client.info().session_type,
        SessionType::NonInteractiveCommands
    );

    client.write_all(b"input bytes").await.unwrap();
    client.resize(132, 43).await.unwrap();
    client.send_flag(Flag::TerminateSession).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match timeout(LIMIT, agent.recv()).await.unwrap().unwrap() {
            Incoming::Data(data) => seen.push(format!("data {}", String::from_utf8_lossy(&data))),
            Incoming::Resize(size) => seen.push(format!("{size:?}")),
            Incoming::Flag(flag) => seen.push(format!("{flag:?}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    let size = TerminalSize {
        cols: 132,
        rows: 43,
    };
    assert_eq!(
        seen,
        [
            "data input bytes".to_owned(),
            format!("{size:?}"),
            "TerminateSession".into()
        ]
    );

    agent.write_all(b"out").await.unwrap();
    agent.send_stderr(b"err").await.unwrap();
    agent.send_exit_code(3).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match timeout(LIMIT, client.recv()).await.unwrap().unwrap() {
            Incoming::Data(data) => seen.push(format!("out {}", String::from_utf8_lossy(&data))),
            Incoming::Stderr(data) => seen.push(format!("err {}", String::from_utf8_lossy(&data))),
            Incoming::ExitCode(ExitCode(code)) => seen.push(format!("exit {code}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["out out", "err err", "exit 3"]);
    assert!(matches!(agent.close().await.unwrap(), Ending::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_read_keeps_events_for_later() {
    let lo = Loopback::start(false).await;
    let (client_config, agent_config) = command_session(&lo);
    let (client, mut agent) = lo.connect_pair(client_config, agent_config).await.unwrap();
    agent.send_stderr(b"warning").await.unwrap();
    agent.write_all(b"output").await.unwrap();
    let (mut read, _write) = client.split();
    let mut buf = [0; 6];
    timeout(LIMIT, read.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"output");
    let events = read.take_events();
    assert!(
        matches!(&events[..], [Incoming::Stderr(data)] if &data[..] == b"warning"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_client_connection_drops() {
    let mut lo = Loopback::start(false).await;
    assert!(
        round_trip(
            &mut lo,
            false,
            false,
            16 << 20,
            Some(Kill::Side(Role::Client))
        )
        .await
            >= 1
    );
    assert!(round_trip(&mut lo, true, true, 1 << 20, Some(Kill::Side(Role::Client))).await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_agent_connection_drops() {
    let mut lo = Loopback::start(false).await;
    assert!(
        round_trip(
            &mut lo,
            true,
            false,
            16 << 20,
            Some(Kill::Side(Role::Agent))
        )
        .await
            >= 1
    );
    assert!(round_trip(&mut lo, false, true, 1 << 20, Some(Kill::Side(Role::Agent))).await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_relay_restarts() {
    let mut lo = Loopback::start(true).await;
    assert!(round_trip(&mut lo, true, false, 16 << 20, Some(Kill::Relay)).await >= 2);
    assert!(round_trip(&mut lo, false, true, 1 << 20, Some(Kill::Relay)).await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_verified_by_sha256() {
    let lo = Loopback::start(true).await;
    let (client_config, agent_config) = lo.configs(true, false);
    let (client, agent) = lo.connect_pair(client_config, agent_config).await.unwrap();
    let transfer = Transfer {
        bytes: 100_000_000,
        chunk: 64 * 1024,
        sha256: true,
    };
    let run = exchange(client, agent, transfer, None);
    let (up, down) = timeout(Duration::from_secs(300), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(up.sent_sha256, up.received_sha256);
    assert_eq!(down.sent_sha256, down.received_sha256);
    assert_ne!(up.sent_sha256, down.sent_sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_back_the_writer() {
    let mut lo = Loopback::start(false).await;
    // The stalled side's liveness deadline is short (the point: it must not fire while the
    // application is behind); the writer's stays generous so a CPU-starved CI run cannot
    // mistake slowness for a dead link.
    let client_options = lo.options(Role::Client);
    lo.pong_timeout = Duration::from_secs(3);
    let (client_config, agent_config) = lo.configs(false, false);
    let (client, agent) = lo
        .connect_pair_with(client_config, agent_config, client_options)
        .await
        .unwrap();
    let counters = [client.counters(), agent.counters()];
    let total: u64 = 64 << 20;
    let accepted = Arc::new(AtomicU64::new(0));
    let (_client_read, mut client_write) = client.split();
    let writer = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut pattern = Pattern::new(9);
            let mut buf = vec![0; 64 * 1024];
            let mut left = total;
            while left > 0 {
                let n = (left as usize).min(buf.len());
                pattern.fill(&mut buf[..n]);
                client_write.write_all(&buf[..n]).await.unwrap();
                accepted.fetch_add(n as u64, Ordering::Relaxed);
                left -= n as u64;
            }
            client_write
        })
    };
    // The agent reads nothing for longer than the pong timeout (3 s in these options).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = accepted.load(Ordering::Relaxed);
    assert!(!writer.is_finished());
    assert!(
        held < 24 << 20,
        "the writer got {held} bytes ahead of a reader that read nothing"
    );
    assert!(
        held > 1 << 20,
        "the writer should fill the window first, got {held}"
    );
    // Now read everything: nothing lost, nothing duplicated, no reconnection needed.
    let (mut agent_read, _agent_write) = agent.split();
    let mut pattern = Pattern::new(9);
    let mut buf = vec![0; 64 * 1024];
    let mut expected = vec![0; 64 * 1024];
    let mut received = 0;
    while received < total {
        let n = timeout(LIMIT, agent_read.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0);
        pattern.fill(&mut expected[..n]);
        assert!(buf[..n] == expected[..n], "wrong bytes at {received}");
        received += n as u64;
    }
    let _write = timeout(LIMIT, writer).await.unwrap().unwrap();
    assert_eq!(counters[0].reconnects() + counters[1].reconnects(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens() {
    let lo = Loopback::start(false).await;
    let url = lo.url();
    let (client_config, agent_config) = lo.configs(false, false);
    let options = || lo.options(Role::Client);

    let error = net::connect(&url, "not-a-token", client_config.clone(), options())
        .await
        .unwrap_err();
    assert!(matches!(error, NetError::Refused(_)), "{error}");

    // A token of the other side, or of another session, is refused too.
    let agent_token = lo.tokens.issue(&lo.session_id, Role::Agent);
    let error = net::connect(&url, &agent_token, client_config.clone(), options())
        .await
        .unwrap_err();
    assert!(matches!(error, NetError::Refused(_)), "{error}");
    let other = lo.tokens.issue("another-session", Role::Client);
    let error = net::connect(&url, &other, client_config.clone(), options())
        .await
        .unwrap_err();
    assert!(matches!(error, NetError::Refused(_)), "{error}");

    // Tokens are single-use: of two connections with the same token, one is refused and the
    // other is accepted (it then waits for a client, so it is the one still pending).
    let token = lo.tokens.issue(&lo.session_id, Role::Agent);
    let first = net::connect_agent(&url, &token, agent_config.clone(), lo.options(Role::Agent));
    let second = net::connect_agent(&url, &token, agent_config, lo.options(Role::Agent));
    let refused = tokio::select! {
        result = first => result,
        result = second => result,
        () = tokio::time::sleep(LIMIT) => panic!("neither connection was refused"),
    };
    let error = refused.unwrap_err();
    assert!(matches!(error, NetError::Refused(_)), "{error}");

    // A path that is no data channel is refused at the upgrade.
    let bad_url = url.replace("/v1/data-channel/", "/v2/other/");
    let token = lo.tokens.issue(&lo.session_id, Role::Client);
    let error = net::connect(&bad_url, &token, client_config, options())
        .await
        .unwrap_err();
    assert!(
        matches!(error, NetError::Refused(ref text) if text.contains("404")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("ws://127.0.0.1:{port}/v1/data-channel/s?role=publish_subscribe");
    let config = ssm_session::session::ClientConfig::new("s", "i-1");
    let error = net::connect(&url, "t", config.clone(), net::Options::default())
        .await
        .unwrap_err();
    assert!(matches!(error, NetError::Connect(_)), "{error}");
    let error = net::connect("http://x", "t", config, net::Options::default())
        .await
        .unwrap_err();
    assert!(matches!(error, NetError::InvalidUrl(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_transport_without_a_token_source_ends_clearly() {
    let lo = Loopback::start(false).await;
    let (client_config, agent_config) = lo.configs(false, false);
    let mut client_options = lo.options(Role::Client);
    client_options.token_source = None;
    let (mut client, _agent) = lo
        .connect_pair_with(client_config, agent_config, client_options)
        .await
        .unwrap();
    assert!(
        lo.relay
            .as_ref()
            .unwrap()
            .disconnect(&lo.session_id, Role::Client)
    );
    let mut buf = [0; 16];
    let error = timeout(LIMIT, client.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.to_string().contains("no token source"), "{error}");
    assert_eq!(
        client.read(&mut buf).await.unwrap(),
        0,
        "EOF after the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_be_resumed_ends_with_the_reason() {
    let lo = Loopback::start(false).await;
    let (client_config, agent_config) = lo.configs(false, false);
    let refuse = || -> TokenFuture {
        Box::pin(async {
            Err(TokenError::Final(
                "session terminated by the administrator".into(),
            ))
        })
    };
    let client_options = lo.options(Role::Client).token_source(Arc::new(refuse));
    let (mut client, _agent) = lo
        .connect_pair_with(client_config, agent_config, client_options)
        .await
        .unwrap();
    lo.relay
        .as_ref()
        .unwrap()
        .disconnect(&lo.session_id, Role::Client);
    match timeout(LIMIT, client.recv()).await.unwrap() {
        Some(Incoming::Ended(Ending::Failed(error))) => {
            let text = error.to_string();
            assert!(text.contains("terminated by the administrator"), "{text}");
        }
        other => panic!("expected the end with its reason, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_is_reported_and_survived() {
    let lo = Loopback::start(false).await;
    let url = lo.url();
    let (client_config, agent_config) = lo.configs(false, false);
    let agent_token = lo.tokens.issue(&lo.session_id, Role::Agent);
    let agent = tokio::spawn({
        let url = url.clone();
        let options = lo.options(Role::Agent);
        async move { net::connect_agent(&url, &agent_token, agent_config, options).await }
    });
    // A hostile "client" with a valid token sends things that are not frames, then leaves.
    let token = lo.tokens.issue(&lo.session_id, Role::Client);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let opening = format!(
        r#"{{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"{token}","ClientId":"c","ClientVersion":"1.2.694.0"}}"#
    );
    ws.send(Message::text(opening)).await.unwrap();
    let mut bad_digest = vec![0u8; 200];
    bad_digest[3] = 116; // HeaderLength 116, then zeros: no type
    for garbage in [
        vec![1, 2, 3],
        vec![0xff; 119],
        bad_digest,
        b"{\"not\":\"a frame\"}".to_vec(),
    ] {
        ws.send(Message::binary(garbage)).await.unwrap();
    }
    ws.send(Message::text("text garbage")).await.unwrap();
    // The relay forwards them; wait until they have reached the agent, then leave.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(ws);

    // A real client now opens the session, and it works.
    let client_token = lo.tokens.issue(&lo.session_id, Role::Client);
    let mut client = net::connect(&url, &client_token, client_config, lo.options(Role::Client))
        .await
        .unwrap();
    let mut agent = timeout(LIMIT, agent).await.unwrap().unwrap().unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut errors = 0;
    loop {
        match timeout(LIMIT, agent.recv()).await.unwrap().unwrap() {
            Incoming::Error(_) => errors += 1,
            Incoming::Data(data) => {
                assert_eq!(&data[..], b"hello");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(errors, 5, "each garbage message is reported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_waits_for_acknowledgements() {
    let lo = Loopback::start(false).await;
    let (client_config, agent_config) = lo.configs(false, false);
    let (mut client, agent) = lo.connect_pair(client_config, agent_config).await.unwrap();
    client.write_all(&vec![7; 3 << 20]).await.unwrap();
    let reader = tokio::spawn(async move {
        let (mut read, _write) = agent.split();
        let mut all = Vec::new();
        let mut buf = vec![0; 1 << 16];
        while all.len() < 3 << 20 {
            let n = read.read(&mut buf).await.unwrap();
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    assert!(matches!(
        timeout(LIMIT, client.close()).await.unwrap().unwrap(),
        Ending::Closed
    ));
    assert_eq!(reader.await.unwrap(), vec![7; 3 << 20]);
}

/// A TCP proxy whose existing connections can be frozen: bytes stop flowing both ways while the
/// sockets stay open, as on a dead network path. Connections made later flow normally. Each
/// `send_modify` on the returned sender freezes the connections open at that moment.
async fn freezable_proxy(target: std::net::SocketAddr) -> (u16, tokio::sync::watch::Sender<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (freeze, generation) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
            let mut generation = generation.clone();
            let born = *generation.borrow();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    () = async { drop(generation.wait_for(|now| *now != born).await) } => {
                        // Hold both sockets open and silent.
                        std::future::pending::<()>().await
                    }
                }
            });
        }
    });
    (port, freeze)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_declared_dead_and_replaced() {
    let mut lo = Loopback::start(false).await;
    lo.pong_timeout = Duration::from_secs(3);
    let (port, freeze) = freezable_proxy(lo.addr).await;
    let url = lo
        .url()
        .replace(&format!(":{}/", lo.addr.port()), &format!(":{port}/"));
    let (client_config, agent_config) = lo.configs(false, false);
    let client_token = lo.tokens.issue(&lo.session_id, Role::Client);
    let agent_token = lo.tokens.issue(&lo.session_id, Role::Agent);
    // Only the client goes through the proxy.
    let agent_url = lo.url();
    let (client, agent) = tokio::join!(
        net::connect(&url, &client_token, client_config, lo.options(Role::Client)),
        net::connect_agent(
            &agent_url,
            &agent_token,
            agent_config,
            lo.options(Role::Agent)
        ),
    );
    let (mut client, mut agent) = (client.unwrap(), agent.unwrap());
    let counters = client.counters();
    client.write_all(b"before").await.unwrap();
    let mut buf = [0; 6];
    agent.read_exact(&mut buf).await.unwrap();

    freeze.send_modify(|generation| *generation += 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.write_all(b"during").await.unwrap();
    agent.write_all(b"answer").await.unwrap();
    // Pings go unanswered; after the pong timeout (3 s) the client redials through the proxy.
    timeout(LIMIT, agent.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"during");
    timeout(LIMIT, client.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"answer");
    assert_eq!(counters.reconnects(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_drops_connections_that_never_open() {
    use ssm_session::net::relay::{Relay, RelayConfig, TokenTable};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let mut config = RelayConfig::new(Arc::new(TokenTable::default()));
    config.open_timeout = Duration::from_millis(200);
    let relay = Relay::bind("127.0.0.1:0", config).await.unwrap();

    // TCP only, no upgrade: the relay hangs up.
    let mut tcp = tokio::net::TcpStream::connect(relay.local_addr())
        .await
        .unwrap();
    let mut buf = [0; 16];
    let n = timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);

    // Upgraded, but no opening message: a policy close.
    let (mut ws, _) = tokio_tungstenite::connect_async(relay.stream_url("s").as_str())
        .await
        .unwrap();
    match timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected a policy close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_twice_is_an_error_not_a_panic() {
    let lo = Loopback::start(false).await;
    let (client_config, agent_config) = lo.configs(false, false);
    let (client, _agent) = lo.connect_pair(client_config, agent_config).await.unwrap();
    let (_read, mut write) = client.split();
    timeout(LIMIT, write.shutdown()).await.unwrap().unwrap();
    let again = timeout(LIMIT, write.shutdown()).await.unwrap();
    assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
}

//! Issue 13, the gateway's edge: what a peer that has not authenticated may cost (connections,
//! their rate, keep-alive, buffered bodies, audit records) and request framing, each attacked
//! over raw sockets on loopback.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use ssm_session::gateway::{self, DevEnvironment, Gateway, Limits};
use ssm_session::sigv4::{self, Credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A development gateway with `limits` (a short header timeout unless changed).
async fn gateway_with(
    name: &str,
    edit: impl FnOnce(&mut Limits),
) -> (Gateway, DevEnvironment, PathBuf) {
    let state = std::env::temp_dir().join(format!("ssm-edge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
    dev.config.limits.header_read_timeout_secs = 2;
    dev.config.limits.request_timeout_secs = 5;
    edit(&mut dev.config.limits);
    let gateway = Gateway::start(dev.config.clone(), None).await.unwrap();
    (gateway, dev, state)
}

fn authority(gateway: &Gateway) -> String {
    gateway.endpoint().trim_start_matches("http://").to_owned()
}

/// A raw HTTP/1.1 API request; signed with `credentials` when given.
fn api_request(
    authority: &str,
    target: &str,
    body: &str,
    credentials: Option<&Credentials>,
) -> Vec<u8> {
    let mut headers = vec![
        ("host".to_owned(), authority.to_owned()),
        (
            "content-type".to_owned(),
            "application/x-amz-json-1.1".to_owned(),
        ),
        ("x-amz-target".to_owned(), target.to_owned()),
    ];
    if let Some(credentials) = credentials {
        let request = sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signature = sigv4::sign(&request, credentials, "us-east-1", "ssm", now);
        headers.extend(signature);
    }
    let mut wire = String::from("POST / HTTP/1.1\r\n");
    for (name, value) in &headers {
        wire.push_str(&format!("{name}: {value}\r\n"));
    }
    wire.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    wire.into_bytes()
}

fn admin(dev: &DevEnvironment) -> Credentials {
    Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None)
}

/// Reads one response (head and `Content-Length` body) within `limit`; `None` if none came.
async fn read_response(socket: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return Some(text);
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, socket.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether the gateway closes `socket` within `limit` (end of stream or a reset).
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A connection from another loopback address, `127.0.0.<host>`: another source.
async fn connect_from(host: u8, authority: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))
        .unwrap();
    socket.connect(authority.parse().unwrap()).await.unwrap()
}

/// A websocket upgrade request for `path`.
fn upgrade_request(authority: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: upgrade\r\n\
         upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

fn audit_records(gateway: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(gateway.audit_path())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn an_unauthenticated_request_ends_its_connection_an_authenticated_one_keeps_it() {
    let (gateway, dev, state) = gateway_with("keepalive", |_| {}).await;
    let authority = authority(&gateway);

    // Junk every few seconds used to hold a connection (and a descriptor) forever.
    let mut junk = TcpStream::connect(&authority).await.unwrap();
    junk.write_all(&api_request(
        &authority,
        "AmazonSSM.DescribeSessions",
        "{}",
        None,
    ))
    .await
    .unwrap();
    let answer = read_response(&mut junk, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(closed_within(&mut junk, Duration::from_secs(1)).await);

    // Signed calls keep the connection, until it has been idle for the header timeout.
    let mut signed = TcpStream::connect(&authority).await.unwrap();
    let body = r#"{"State":"Active"}"#;
    for _ in 0..3 {
        let request = api_request(
            &authority,
            "AmazonSSM.DescribeSessions",
            body,
            Some(&admin(&dev)),
        );
        signed.write_all(&request).await.unwrap();
        let answer = read_response(&mut signed, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let idle = Instant::now();
    assert!(closed_within(&mut signed, Duration::from_secs(5)).await);
    assert!(
        idle.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        idle.elapsed()
    );

    // A request that fails authentication ends even a connection that authenticated before.
    let mut mixed = TcpStream::connect(&authority).await.unwrap();
    let request = api_request(
        &authority,
        "AmazonSSM.DescribeSessions",
        body,
        Some(&admin(&dev)),
    );
    mixed.write_all(&request).await.unwrap();
    let answer = read_response(&mut mixed, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    mixed
        .write_all(&api_request(
            &authority,
            "AmazonSSM.DescribeSessions",
            body,
            None,
        ))
        .await
        .unwrap();
    let answer = read_response(&mut mixed, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(closed_within(&mut mixed, Duration::from_secs(1)).await);
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn one_source_cannot_hold_more_than_its_share_of_unauthenticated_connections() {
    let (gateway, dev, state) = gateway_with("per-source", |limits| {
        limits.header_read_timeout_secs = 10;
        limits.max_unauthenticated_per_source = 4;
    })
    .await;
    let authority = authority(&gateway);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&authority).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&authority).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a fifth unauthenticated connection from one source was kept"
    );
    for socket in &mut held {
        assert!(!closed_within(socket, Duration::from_millis(10)).await);
    }
    // Once one of them authenticates, it no longer counts.
    let body = r#"{"State":"Active"}"#;
    let request = api_request(
        &authority,
        "AmazonSSM.DescribeSessions",
        body,
        Some(&admin(&dev)),
    );
    held[0].write_all(&request).await.unwrap();
    let answer = read_response(&mut held[0], Duration::from_secs(3))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut another = TcpStream::connect(&authority).await.unwrap();
    assert!(!closed_within(&mut another, Duration::from_millis(500)).await);
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn a_source_opening_connections_too_fast_is_cut_off() {
    let (gateway, _dev, state) = gateway_with("rate", |limits| {
        limits.header_read_timeout_secs = 10;
        limits.connection_burst_per_source = 5;
        limits.connection_rate_per_source = 1;
    })
    .await;
    let authority = authority(&gateway);
    let mut sockets = Vec::new();
    for _ in 0..12 {
        sockets.push(TcpStream::connect(&authority).await.unwrap());
    }
    let mut closed = 0;
    for socket in &mut sockets {
        if closed_within(socket, Duration::from_millis(300)).await {
            closed += 1;
        }
    }
    assert!((6..=7).contains(&closed), "{closed} of 12 closed");
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn at_the_connection_cap_the_oldest_unauthenticated_connection_makes_room() {
    let (gateway, dev, state) = gateway_with("cap", |limits| {
        limits.header_read_timeout_secs = 10;
        limits.max_connections = 8;
    })
    .await;
    let authority = authority(&gateway);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(&authority).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Before, this caller waited in the accept queue until a junk connection timed out.
    let started = Instant::now();
    let mut caller = TcpStream::connect(&authority).await.unwrap();
    let body = r#"{"State":"Active"}"#;
    let request = api_request(
        &authority,
        "AmazonSSM.DescribeSessions",
        body,
        Some(&admin(&dev)),
    );
    caller.write_all(&request).await.unwrap();
    let answer = read_response(&mut caller, Duration::from_secs(3)).await;
    let answer = answer.expect("no answer at the connection cap");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        closed_within(&mut held[0], Duration::from_millis(500)).await,
        "the oldest was kept"
    );
    assert!(!closed_within(&mut held[7], Duration::from_millis(10)).await);
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn bodies_are_bounded_by_the_operation_before_they_are_read() {
    let (gateway, _dev, state) = gateway_with("body-op", |_| {}).await;
    let authority = authority(&gateway);
    for (target, length) in [
        ("AmazonSSM.TerminateSession", 100_000),
        ("AmazonSSM.StartSession", 100_000),
        ("TrentService.Decrypt", 100_000),
        ("NoSuch.Operation", 5_000),
    ] {
        let mut socket = TcpStream::connect(&authority).await.unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nhost: {authority}\r\nx-amz-target: {target}\r\ncontent-length: {length}\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let answer = read_response(&mut socket, Duration::from_secs(1)).await;
        let answer = answer.unwrap_or_else(|| panic!("{target}: no answer before the body"));
        assert!(answer.starts_with("HTTP/1.1 413"), "{target}: {answer}");
    }
    // Nor does hyper buffer a 100 KiB head (its default would be 400 KiB a connection).
    let mut socket = TcpStream::connect(&authority).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n",
        "a".repeat(100_000)
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let answer = read_response(&mut socket, Duration::from_secs(1)).await;
    let answer = answer.expect("no answer to a 100 KiB head");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // What an operation needs still goes through: a 4 KiB plaintext to Encrypt, base64.
    let plaintext = "A".repeat(5464);
    let body = format!(r#"{{"KeyId":"alias/ssm-dev","Plaintext":"{plaintext}"}}"#);
    let mut socket = TcpStream::connect(&authority).await.unwrap();
    socket
        .write_all(&api_request(
            &authority,
            "TrentService.Encrypt",
            &body,
            None,
        ))
        .await
        .unwrap();
    let answer = read_response(&mut socket, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "read and refused unsigned: {answer}"
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn unauthenticated_bodies_share_one_bounded_budget() {
    let (gateway, _dev, state) = gateway_with("body-budget", |limits| {
        limits.max_unauthenticated_body_bytes = 40_000;
    })
    .await;
    let authority = authority(&gateway);
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {authority}\r\nx-amz-target: TrentService.Encrypt\r\ncontent-length: 16000\r\n\r\n{{\"KeyId\":"
    );
    // Two bodies that never finish hold 32 000 of the 40 000 bytes.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut socket = TcpStream::connect(&authority).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        slow.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let mut socket = TcpStream::connect(&authority).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        let answer = read_response(&mut socket, Duration::from_secs(1)).await;
        let answer = answer.expect("a body over the budget was waited for");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.contains("unauthenticated request bodies"),
            "{answer}"
        );
    }
    // Released with the connections that held it.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut socket = TcpStream::connect(&authority).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    assert!(
        read_response(&mut socket, Duration::from_millis(500))
            .await
            .is_none()
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn a_junk_flood_is_audited_as_a_few_records_and_a_summary() {
    let (gateway, dev, state) = gateway_with("audit-flood", |limits| {
        limits.refusal_records_per_source = 5;
        limits.refusal_audit_interval_secs = 3;
        limits.connection_burst_per_source = 1_000;
    })
    .await;
    let authority = authority(&gateway);
    let before = audit_records(&gateway).len();
    for _ in 0..200 {
        let mut socket = TcpStream::connect(&authority).await.unwrap();
        socket
            .write_all(&api_request(
                &authority,
                "AmazonSSM.StartSession",
                "{}",
                None,
            ))
            .await
            .unwrap();
        let answer = read_response(&mut socket, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    // Authenticated refusals are still audited one by one.
    let mut signed = TcpStream::connect(&authority).await.unwrap();
    for i in 0..20 {
        let body = format!(r#"{{"SessionId":"dev-admin-{i:017x}"}}"#);
        let target = "AmazonSSM.TerminateSession";
        let request = api_request(&authority, target, &body, Some(&admin(&dev)));
        signed.write_all(&request).await.unwrap();
        let answer = read_response(&mut signed, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.contains("DoesNotExistException"), "{answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let summary = loop {
        let records = audit_records(&gateway);
        let summary = records.iter().skip(before).find_map(|record| {
            let reason = record["reason"].as_str()?;
            reason
                .contains("more refusals of unauthenticated requests")
                .then(|| reason.to_owned())
        });
        if let Some(summary) = summary {
            break summary;
        }
        assert!(Instant::now() < deadline, "no summary record");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let records = audit_records(&gateway);
    let new = &records[before..];
    let unauthenticated = new
        .iter()
        .filter(|record| record["principal"].is_null() && record["decision"] == "deny")
        .count();
    let authenticated = new
        .iter()
        .filter(|record| record["principal"] == "dev-admin")
        .count();
    // 5 one by one, then one summary counting the other 195.
    assert_eq!(unauthenticated, 6, "{new:#?}");
    assert!(summary.starts_with("195 more refusals"), "{summary}");
    assert!(summary.contains("127.0.0.1"), "{summary}");
    assert_eq!(authenticated, 20);
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn ambiguous_framing_is_refused_before_the_body_is_read() {
    let (gateway, _dev, state) = gateway_with("framing", |_| {}).await;
    let authority = authority(&gateway);
    for head in [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ] {
        let mut socket = TcpStream::connect(&authority).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        let answer = read_response(&mut socket, Duration::from_secs(1)).await;
        let answer = answer.unwrap_or_else(|| panic!("no answer to {head:?}"));
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("Content-Length"), "{answer}");
        assert!(closed_within(&mut socket, Duration::from_secs(1)).await);
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn over_http2_bodies_are_bounded_per_stream_and_junk_ends_the_connection() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (gateway, _dev, state) = gateway_with("h2", |_| {}).await;
    let authority = authority(&gateway);
    let tcp = TcpStream::connect(&authority).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::post(format!("http://{authority}/"))
        .header("x-amz-target", "AmazonSSM.TerminateSession")
        .body(Full::new(bytes::Bytes::from(vec![b'a'; 100_000])))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 413);
    response.into_body().collect().await.ok();
    // Unauthenticated: the gateway ends the connection (GOAWAY) after answering.
    let ended = tokio::time::timeout(Duration::from_secs(3), connection).await;
    assert!(ended.is_ok(), "the HTTP/2 connection was kept");
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn refused_control_channel_upgrades_are_audited_rate_limited() {
    let (gateway, dev, state) = gateway_with("control-flood", |limits| {
        limits.refusal_records_per_source = 3;
        limits.connection_burst_per_source = 1_000;
    })
    .await;
    let authority = authority(&gateway);
    let before = audit_records(&gateway).len();
    for _ in 0..50 {
        let mut socket = TcpStream::connect(&authority).await.unwrap();
        let upgrade = format!(
            "GET /v1/control-channel/{} HTTP/1.1\r\nhost: {authority}\r\nconnection: upgrade\r\n\
             upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            dev.setup.agent_id
        );
        socket.write_all(upgrade.as_bytes()).await.unwrap();
        let answer = read_response(&mut socket, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    let refusals = audit_records(&gateway)[before..]
        .iter()
        .filter(|record| record["action"] == "ssmmessages:OpenControlChannel")
        .count();
    assert_eq!(refusals, 3);
    // The rest are counted at shutdown, not lost.
    gateway.shutdown().await;
    let text = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    assert!(
        text.contains("47 more refusals of unauthenticated requests"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn one_source_cannot_take_the_whole_unauthenticated_body_budget() {
    let (gateway, _dev, state) = gateway_with("body-share", |limits| {
        // An eighth is 20 000, so a source's share is one StartSession body: 65 536 bytes.
        limits.max_unauthenticated_body_bytes = 160_000;
    })
    .await;
    let authority = authority(&gateway);
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {authority}\r\nx-amz-target: TrentService.Encrypt\r\ncontent-length: 16000\r\n\r\n{{\"KeyId\":"
    );
    // Four bodies that never finish hold 64 000 bytes of this source's share…
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut socket = connect_from(1, &authority).await;
        socket.write_all(head.as_bytes()).await.unwrap();
        slow.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // …so a fifth is refused at once, though the gateway's budget has room…
    let mut socket = connect_from(1, &authority).await;
    socket.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut socket, Duration::from_secs(1)).await;
    let answer = answer.expect("a body over the source's share was waited for");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // …which another source still gets (its body is read, so no answer yet).
    for _ in 0..4 {
        let mut other = connect_from(2, &authority).await;
        other.write_all(head.as_bytes()).await.unwrap();
        assert!(
            read_response(&mut other, Duration::from_millis(300))
                .await
                .is_none(),
            "another source was refused"
        );
        slow.push(other);
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn unopened_data_channels_count_against_their_source_until_a_token_is_accepted() {
    let (gateway, _dev, state) = gateway_with("data-unopened", |limits| {
        limits.header_read_timeout_secs = 10;
        limits.max_unauthenticated_per_source = 4;
    })
    .await;
    let authority = authority(&gateway);
    // Upgraded data channels that never send a token (the relay waits 10 s for one)…
    let mut held = Vec::new();
    for i in 0..4 {
        let mut socket = connect_from(1, &authority).await;
        let path = format!("/v1/data-channel/nobody-{i:017x}");
        socket
            .write_all(upgrade_request(&authority, &path).as_bytes())
            .await
            .unwrap();
        let answer = read_response(&mut socket, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        held.push(socket);
    }
    // …are still unauthenticated connections of their source: a fifth is closed on accept.
    let mut extra = connect_from(1, &authority).await;
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "unopened data channels did not count against their source"
    );
    let mut other = connect_from(2, &authority).await;
    assert!(!closed_within(&mut other, Duration::from_millis(300)).await);
    // Closing them gives the source its room back.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = connect_from(1, &authority).await;
    assert!(!closed_within(&mut again, Duration::from_millis(300)).await);
    drop(gateway);
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn a_scan_from_many_addresses_is_audited_up_to_a_total_and_summarised() {
    let (gateway, _dev, state) = gateway_with("scan", |limits| {
        limits.refusal_records_per_source = 2;
        limits.refusal_records_total = 5;
    })
    .await;
    let authority = authority(&gateway);
    let before = audit_records(&gateway).len();
    for host in 10..40 {
        let mut socket = connect_from(host, &authority).await;
        let junk = api_request(&authority, "AmazonSSM.StartSession", "{}", None);
        socket.write_all(&junk).await.unwrap();
        let answer = read_response(&mut socket, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    let one_by_one = audit_records(&gateway)[before..]
        .iter()
        .filter(|record| record["decision"] == "deny")
        .count();
    assert_eq!(one_by_one, 5);
    gateway.shutdown().await;
    let text = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    assert!(
        text.contains("25 more refusals of unauthenticated requests from sources over the total"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(state);
}

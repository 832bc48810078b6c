//! Issue 13, finding 13 (SigV4 as AWS enforces it) and the refused data-channel tokens of
//! finding 14, as attacks on a gateway on loopback: a body swapped under `UNSIGNED-PAYLOAD`,
//! an unsigned `X-Amz-Target` swapped, scopes for another region, service or day, signed
//! requests replayed (StartSession, ResumeSession, the agent's CreateDataChannel and
//! control-channel upgrade, captured by a proxy on the agent's path), and refused data-channel
//! openings, each of which must leave an audit record.

#[path = "support/online.rs"]
mod online;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use ssm_session::agent::AgentSettings;
use ssm_session::aws::ApiClient;
use ssm_session::client::SessionClient;
use ssm_session::gateway::{self, Gateway};
use ssm_session::net::{Incoming, TlsConfig};
use ssm_session::sigv4::{self, Credentials, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// The first bytes each connection through a [`Proxy`] sent toward the gateway.
type Captured = Arc<Mutex<Vec<Vec<u8>>>>;

/// How much of each connection a [`Proxy`] keeps: enough for one request head and body.
const CAPTURE_LIMIT: usize = 16 * 1024;

/// A development gateway, optionally with an agent that reaches it through a recording
/// proxy, as an eavesdropper on the agent's network would see it.
struct World {
    gateway: Gateway,
    admin: Credentials,
    agent: Credentials,
    state: PathBuf,
    captured: Captured,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl World {
    async fn start(name: &str) -> World {
        let state =
            std::env::temp_dir().join(format!("ssm-hardening-sigv4-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let dev = gateway::prepare_dev(&state, "127.0.0.1:0".parse().unwrap(), false).unwrap();
        let gateway = Gateway::start(dev.config, None).await.unwrap();
        World {
            gateway,
            admin: Credentials::new(&dev.setup.access_key_id, &dev.setup.secret_access_key, None),
            agent: Credentials::new(&dev.setup.agent_id, &dev.setup.agent_secret, None),
            state,
            captured: Captured::default(),
            tasks: Vec::new(),
        }
    }

    /// Starts the agent behind the recording proxy and waits until it is online.
    async fn with_agent(name: &str) -> World {
        let mut world = World::start(name).await;
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        world.tasks.push(tokio::spawn(run_proxy(
            proxy,
            world.gateway.local_addr(),
            world.captured.clone(),
        )));
        let mut settings = AgentSettings::new(
            &proxy_url,
            &world.agent.access_key_id,
            &world.agent.secret_access_key,
        )
        .unwrap();
        settings.shell = "/bin/sh".into();
        world.tasks.push(tokio::spawn(async move {
            if let Err(error) = ssm_session::agent::run(settings, std::future::pending()).await {
                panic!("the agent cannot run: {error}");
            }
        }));
        online::wait_online(&world.api(&world.admin), world.target()).await;
        world
    }

    fn target(&self) -> &str {
        &self.agent.access_key_id
    }

    fn host(&self) -> String {
        self.gateway.local_addr().to_string()
    }

    fn api(&self, credentials: &Credentials) -> ApiClient {
        ApiClient::new(
            self.gateway.endpoint(),
            "us-east-1",
            credentials.clone(),
            TlsConfig::default(),
        )
        .unwrap()
    }

    /// A signed JSON API call as it goes on the wire.
    fn api_call(&self, credentials: &Credentials, target: &str, body: &Value) -> Signed {
        Signed::new(&self.host(), "/", target, body.to_string().into_bytes()).sign(
            credentials,
            "us-east-1",
            service_of(target),
        )
    }

    /// The audit records whose action is `action`.
    fn audited(&self, action: &str) -> Vec<Value> {
        std::fs::read_to_string(self.gateway.audit_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|record| record["action"] == action)
            .collect()
    }

    /// The captured request that starts with `prefix`, waiting up to 10 s for it.
    async fn captured(&self, prefix: &str) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .captured
                .lock()
                .unwrap()
                .iter()
                .find(|bytes| bytes.starts_with(prefix.as_bytes()))
                .cloned();
            if let Some(found) = found {
                return found;
            }
            assert!(Instant::now() < deadline, "no {prefix:?} request captured");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn service_of(target: &str) -> &'static str {
    match target.starts_with("TrentService.") {
        true => "kms",
        false => "ssm",
    }
}

/// Forwards every connection to `upstream`, keeping what the client side sent first.
async fn run_proxy(listener: TcpListener, upstream: std::net::SocketAddr, captured: Captured) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let captured = captured.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let index = {
                let mut captured = captured.lock().unwrap();
                captured.push(Vec::new());
                captured.len() - 1
            };
            let (mut client_read, mut client_write) = client.split();
            let (mut server_read, mut server_write) = server.split();
            let upstream = async {
                let mut buffer = [0; 4096];
                loop {
                    let n = match client_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    {
                        let mut captured = captured.lock().unwrap();
                        let kept = &mut captured[index];
                        let room = CAPTURE_LIMIT.saturating_sub(kept.len());
                        kept.extend_from_slice(&buffer[..n.min(room)]);
                    }
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            };
            let downstream = tokio::io::copy(&mut server_read, &mut client_write);
            tokio::select! {
                () = upstream => {}
                _ = downstream => {}
            }
        });
    }
}

/// A request being built and signed by hand, as an attacker or an odd client would.
#[derive(Clone)]
struct Signed {
    method: &'static str,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Signed {
    fn new(host: &str, path: &str, target: &str, body: Vec<u8>) -> Signed {
        let mut headers = vec![
            ("host".to_owned(), host.to_owned()),
            (
                "content-type".to_owned(),
                "application/x-amz-json-1.1".to_owned(),
            ),
        ];
        if !target.is_empty() {
            headers.push(("x-amz-target".to_owned(), target.to_owned()));
        }
        Signed {
            method: "POST",
            path: path.to_owned(),
            query: String::new(),
            headers,
            body,
        }
    }

    /// Adds a header before signing (it is signed).
    fn header(mut self, name: &str, value: &str) -> Signed {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn sign(self, credentials: &Credentials, region: &str, service: &str) -> Signed {
        self.sign_at(credentials, region, service, now())
    }

    fn sign_at(
        mut self,
        credentials: &Credentials,
        region: &str,
        service: &str,
        at: u64,
    ) -> Signed {
        let request = Request {
            method: self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        };
        let added = sigv4::sign(&request, credentials, region, service, at);
        self.headers.extend(added);
        self
    }

    /// Replaces (or adds) a header after signing.
    fn set(mut self, name: &str, value: &str) -> Signed {
        self.headers.retain(|(header, _)| header != name);
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn wire(&self) -> Vec<u8> {
        let target = match self.query.is_empty() {
            true => self.path.clone(),
            false => format!("{}?{}", self.path, self.query),
        };
        let mut head = format!("{} {target} HTTP/1.1\r\n", self.method);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.method == "POST" {
            head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(&self.body);
        wire
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An answer: status, and the JSON body (`Null` when there is none).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["__type"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

/// Sends `wire` on a new connection and reads one answer head and its body.
async fn send(gateway: &Gateway, wire: &[u8]) -> Answer {
    let mut tcp = TcpStream::connect(gateway.local_addr()).await.unwrap();
    tcp.write_all(wire).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    let read = async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse::<usize>().unwrap());
                if received.len() >= end + 4 + length || head.starts_with("http/1.1 101") {
                    let status = head[9..12].parse().unwrap();
                    let body = &received[end + 4..(end + 4 + length).min(received.len())];
                    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
                    return Answer { status, body };
                }
            }
            let n = tcp.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the connection closed before an answer");
            received.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no answer in time")
}

// ------------------------------------------------------------------------- signed content

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_swapped_under_unsigned_payload_is_refused() {
    let world = World::with_agent("unsigned-payload").await;
    let harmless = json!({"Target": "mi-00000000000000000"}).to_string();
    let signed = Signed::new(
        &world.host(),
        "/",
        "AmazonSSM.StartSession",
        harmless.into(),
    )
    .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    .sign(&world.admin, "us-east-1", "ssm");
    // Someone on the path swaps the body for a command on the real target.
    let mut swapped = signed.clone();
    swapped.body = json!({
        "Target": world.target(),
        "DocumentName": "AWS-StartNonInteractiveCommand",
        "Parameters": {"command": ["id"]},
    })
    .to_string()
    .into_bytes();
    let answer = send(&world.gateway, &swapped.wire()).await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "InvalidSignatureException"),
        "{answer:?}"
    );
    assert!(answer.message().contains("UNSIGNED-PAYLOAD"), "{answer:?}");
    assert!(world.gateway.live_sessions().is_empty());

    // A declared hash must be the body's, signed or not.
    let body = json!({"State": "Active"}).to_string().into_bytes();
    let declared = Signed::new(&world.host(), "/", "AmazonSSM.DescribeSessions", body)
        .header("x-amz-content-sha256", &"0".repeat(64))
        .sign(&world.admin, "us-east-1", "ssm");
    let answer = send(&world.gateway, &declared.wire()).await;
    assert_eq!(answer.code(), "InvalidSignatureException", "{answer:?}");
    assert!(
        answer.message().contains("does not match the body"),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_unsigned_target_is_refused() {
    let world = World::with_agent("unsigned-target").await;
    let started = world
        .api(&world.admin)
        .call(
            "ssm",
            "AmazonSSM.StartSession",
            &json!({"Target": world.target()}),
        )
        .await
        .unwrap();
    let session_id = started["SessionId"].as_str().unwrap().to_owned();

    // A ResumeSession signed without X-Amz-Target, which a third party turns into a
    // TerminateSession of the same session.
    let body = json!({"SessionId": session_id}).to_string().into_bytes();
    let resume = Signed::new(&world.host(), "/", "", body)
        .sign(&world.admin, "us-east-1", "ssm")
        .set("x-amz-target", "AmazonSSM.TerminateSession");
    let answer = send(&world.gateway, &resume.wire()).await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "IncompleteSignatureException"),
        "{answer:?}"
    );
    assert!(answer.message().contains("x-amz-target"), "{answer:?}");
    assert_eq!(
        world.gateway.live_sessions(),
        std::slice::from_ref(&session_id)
    );

    // Signed with it, the operation cannot be changed either.
    let body = json!({"SessionId": session_id}).to_string().into_bytes();
    let resume = Signed::new(&world.host(), "/", "AmazonSSM.ResumeSession", body)
        .sign(&world.admin, "us-east-1", "ssm")
        .set("x-amz-target", "AmazonSSM.TerminateSession");
    let answer = send(&world.gateway, &resume.wire()).await;
    assert_eq!(answer.code(), "InvalidSignatureException", "{answer:?}");
    assert_eq!(world.gateway.live_sessions(), [session_id]);
}

// ---------------------------------------------------------------------------------- scope

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_for_another_region_service_or_day_are_refused() {
    let world = World::start("scope").await;
    let describe = json!({"State": "Active"});
    let call = |target: &str, body: &Value| {
        Signed::new(&world.host(), "/", target, body.to_string().into_bytes())
    };

    // What every caller signs is accepted: the baseline.
    let good = world.api_call(&world.admin, "AmazonSSM.DescribeSessions", &describe);
    assert_eq!(send(&world.gateway, &good.wire()).await.status, 200);

    let refusals = [
        (
            call("AmazonSSM.DescribeSessions", &describe).sign(&world.admin, "eu-west-1", "ssm"),
            "region us-east-1",
        ),
        (
            call("AmazonSSM.DescribeSessions", &describe).sign(&world.admin, "us-east-1", "kms"),
            "ssm here, not \"kms\"",
        ),
        (
            call(
                "TrentService.DescribeKey",
                &json!({"KeyId": gateway::DEV_KEY_ALIAS}),
            )
            .sign(&world.admin, "us-east-1", "ssm"),
            "kms here, not \"ssm\"",
        ),
        (
            Signed::new(
                &world.host(),
                "/v1/data-channel/any-session",
                "",
                b"{}".to_vec(),
            )
            .sign(&world.agent, "us-east-1", "ssm"),
            "ssmmessages here, not \"ssm\"",
        ),
        (
            // The day of X-Amz-Date changed after signing.
            good.clone().set("x-amz-date", &{
                let date = good
                    .headers
                    .iter()
                    .find(|(name, _)| name == "x-amz-date")
                    .unwrap()
                    .1
                    .clone();
                let day: u32 = date[6..8].parse().unwrap();
                format!(
                    "{}{:02}{}",
                    &date[..6],
                    if day == 1 { 2 } else { day - 1 },
                    &date[8..]
                )
            }),
            "does not match the request date",
        ),
    ];
    for (request, why) in refusals {
        let answer = send(&world.gateway, &request.wire()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "InvalidSignatureException"),
            "{why}: {answer:?}"
        );
        assert!(answer.message().contains(why), "{why}: {answer:?}");
    }

    // The control-channel upgrade, signed for `ssm` instead of `ssmmessages`: refused and
    // audited like any refused upgrade.
    let path = format!("/v1/control-channel/{}", world.target());
    let mut upgrade = Signed {
        method: "GET",
        path,
        query: "role=subscribe&stream=input".to_owned(),
        headers: vec![("host".to_owned(), world.host())],
        body: Vec::new(),
    }
    .sign(&world.agent, "us-east-1", "ssm");
    for (name, value) in [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ] {
        upgrade = upgrade.set(name, value);
    }
    let answer = send(&world.gateway, &upgrade.wire()).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.message().contains("ssmmessages"), "{answer:?}");
    let refused = world.audited("ssmmessages:OpenControlChannel");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["decision"], "deny");
}

// -------------------------------------------------------------------------------- routing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_target_on_a_channel_path_is_not_an_operation() {
    let world = World::start("routing").await;
    let describe = json!({"State": "Active"}).to_string().into_bytes();
    let call = |path: &str| {
        Signed::new(
            &world.host(),
            path,
            "AmazonSSM.DescribeSessions",
            describe.clone(),
        )
    };
    let control = format!("/v1/control-channel/{}", world.target());
    for path in [control.as_str(), "/other", "/v1/x/", "//"] {
        // Unsigned, and signed for that path: X-Amz-Target selects an operation on `/` only.
        let unsigned = call(path);
        let signed = call(path).sign(&world.admin, "us-east-1", "ssm");
        let mut get = call(path).sign(&world.admin, "us-east-1", "ssm");
        get.method = "GET";
        for request in [unsigned, signed, get] {
            let answer = send(&world.gateway, &request.wire()).await;
            assert_eq!(
                (answer.status, answer.code()),
                (404, "NotFound"),
                "{} {path}: {answer:?}",
                request.method
            );
        }
    }
    // A data-channel path is CreateDataChannel whatever the header says: for agents only.
    let data = call("/v1/data-channel/any-session").sign(&world.admin, "us-east-1", "ssmmessages");
    let answer = send(&world.gateway, &data.wire()).await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "AccessDeniedException"),
        "{answer:?}"
    );
    // On `/` the same call is served.
    let served = call("/").sign(&world.admin, "us-east-1", "ssm");
    assert_eq!(send(&world.gateway, &served.wire()).await.status, 200);
}

// --------------------------------------------------------------------------------- replay

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_start_and_resume_session_mint_no_tokens() {
    let world = World::with_agent("replay-start").await;
    let start = world.api_call(
        &world.admin,
        "AmazonSSM.StartSession",
        &json!({"Target": world.target()}),
    );
    let first = send(&world.gateway, &start.wire()).await;
    assert_eq!(first.status, 200, "{first:?}");
    let session_id = first.body["SessionId"].as_str().unwrap().to_owned();

    let replayed = send(&world.gateway, &start.wire()).await;
    assert_eq!(
        (replayed.status, replayed.code()),
        (400, "InvalidSignatureException"),
        "{replayed:?}"
    );
    assert!(
        replayed.message().contains("already served"),
        "{replayed:?}"
    );
    assert!(replayed.body.get("TokenValue").is_none());
    assert_eq!(
        world.gateway.live_sessions(),
        std::slice::from_ref(&session_id)
    );

    let resume = world.api_call(
        &world.admin,
        "AmazonSSM.ResumeSession",
        &json!({"SessionId": session_id}),
    );
    let first = send(&world.gateway, &resume.wire()).await;
    assert!(first.body["TokenValue"].is_string(), "{first:?}");
    let replayed = send(&world.gateway, &resume.wire()).await;
    assert_eq!(replayed.code(), "InvalidSignatureException", "{replayed:?}");
    assert!(replayed.body.get("TokenValue").is_none());

    // Calls that mint nothing may be repeated, and our own client's identical calls within
    // one second are distinct signatures.
    let describe = world.api_call(
        &world.admin,
        "AmazonSSM.DescribeSessions",
        &json!({"State": "Active"}),
    );
    for _ in 0..2 {
        assert_eq!(send(&world.gateway, &describe.wire()).await.status, 200);
    }
    let api = world.api(&world.admin);
    for _ in 0..2 {
        api.call(
            "ssm",
            "AmazonSSM.ResumeSession",
            &json!({"SessionId": session_id}),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_agent_requests_do_not_replace_its_channels() {
    let world = World::with_agent("replay-agent").await;
    let sessions = SessionClient::new(world.api(&world.admin));
    let started = sessions
        .start_session(world.target(), None, Default::default())
        .await
        .unwrap();
    let mut connection = sessions.connect(&started).await.unwrap();
    let mut echo = async |marker: &str| {
        connection
            .write_all(format!("echo {marker}-$((6*7))\n").as_bytes())
            .await
            .unwrap();
        let expected = format!("{marker}-42");
        let mut output = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), async {
            while !String::from_utf8_lossy(&output).contains(&expected) {
                match connection.recv().await {
                    Some(Incoming::Data(bytes)) => output.extend_from_slice(&bytes),
                    Some(Incoming::Ended(ending)) => panic!("the session ended: {ending:?}"),
                    Some(_) => {}
                    None => panic!("the connection closed"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {expected} in {:?}", String::from_utf8_lossy(&output)));
    };
    echo("before").await;

    // The agent's signed CreateDataChannel, replayed straight to the gateway.
    let create = world
        .captured(&format!("POST /v1/data-channel/{}", started.session_id))
        .await;
    let answer = send(&world.gateway, &create).await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "InvalidSignatureException"),
        "{answer:?}"
    );
    assert!(answer.body.get("TokenValue").is_none(), "{answer:?}");

    // Its control-channel upgrade, replayed: refused and audited.
    let upgrade = world
        .captured(&format!("GET /v1/control-channel/{}", world.target()))
        .await;
    let answer = send(&world.gateway, &upgrade).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.message().contains("already served"), "{answer:?}");
    assert_eq!(world.audited("ssmmessages:OpenControlChannel").len(), 1);

    // The real agent keeps its data channel and its control channel.
    echo("after").await;
    online::wait_online(&world.api(&world.admin), world.target()).await;
    let second = sessions
        .start_session(world.target(), None, Default::default())
        .await
        .unwrap();
    assert_eq!(world.gateway.live_sessions().len(), 2, "{second:?}");
}

// ---------------------------------------------------------------- refused data channels

/// Opens a data channel of `session_id` with `opening` and waits for the gateway to close it.
async fn refused_open(world: &World, session_id: &str, opening: &str) {
    let url = format!(
        "ws://{}/v1/data-channel/{session_id}?role=publish_subscribe",
        world.host()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(opening.into())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|frame| frame.reason.to_string());
            }
        }
        None
    })
    .await
    .expect("the gateway did not close the refused channel");
    assert!(closed.is_some_and(|reason| !reason.is_empty()));
}

fn opening(token: &str, instance: &str) -> String {
    json!({
        "MessageSchemaVersion": "1.0",
        "RequestId": "00000000-0000-4000-8000-000000000000",
        "TokenValue": token,
        "ClientInstanceId": instance,
        "ClientId": "",
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_data_channel_open_is_audited() {
    let world = World::with_agent("refused-tokens").await;
    let started = world
        .api(&world.admin)
        .call(
            "ssm",
            "AmazonSSM.StartSession",
            &json!({"Target": world.target()}),
        )
        .await
        .unwrap();
    let session_id = started["SessionId"].as_str().unwrap().to_owned();
    let token = started["TokenValue"].as_str().unwrap().to_owned();

    // The client's token, used once as it should be: the channel attaches and stays.
    let url = format!(
        "ws://{}/v1/data-channel/{session_id}?role=publish_subscribe",
        world.host()
    );
    let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    client
        .send(Message::Text(opening(&token, "").into()))
        .await
        .unwrap();
    // Attached: the gateway forwards (the agent's handshake) instead of closing.
    let first = tokio::time::timeout(Duration::from_secs(2), client.next()).await;
    assert!(
        !matches!(first, Ok(None | Some(Ok(Message::Close(_)) | Err(_)))),
        "the client side did not attach: {first:?}"
    );

    let attempts: [(&str, String, &str); 6] = [
        (&session_id, opening("forged-token", ""), "unknown"),
        (&session_id, opening("forged-token", ""), "unknown"),
        (&session_id, "not json".to_owned(), "not valid"),
        (&session_id, opening(&token, ""), "already used"),
        // The used token on the agent's side, and a forged one on another session.
        (&session_id, opening(&token, world.target()), "unknown"),
        ("other-session", opening("forged-token", ""), "unknown"),
    ];
    for (i, (session, opening, _)) in attempts.iter().enumerate() {
        refused_open(&world, session, opening).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while world.audited("ssmmessages:OpenDataChannel").len() <= i {
            assert!(Instant::now() < deadline, "attempt {i} was not audited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let records = world.audited("ssmmessages:OpenDataChannel");
    assert_eq!(records.len(), attempts.len(), "{records:?}");
    for (record, (session, _, why)) in records.iter().zip(&attempts) {
        assert_eq!(record["decision"], "deny", "{record}");
        assert_eq!(record["session_id"], *session, "{record}");
        assert!(record["source"].as_str().unwrap().starts_with("127.0.0.1:"));
        let reason = record["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{why}: {record}");
        assert!(!reason.contains(&token), "the token was audited: {record}");
    }
    let log = std::fs::read_to_string(world.gateway.audit_path()).unwrap();
    assert!(!log.contains(&token), "the token reached the audit log");
}

/// A token presented for the wrong side or session is refused, and stays good for its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_side_or_session_is_audited_and_kept() {
    let world = World::with_agent("misused-token").await;
    let started = world
        .api(&world.admin)
        .call(
            "ssm",
            "AmazonSSM.StartSession",
            &json!({"Target": world.target()}),
        )
        .await
        .unwrap();
    let session_id = started["SessionId"].as_str().unwrap().to_owned();
    let token = started["TokenValue"].as_str().unwrap().to_owned();
    refused_open(&world, &session_id, &opening(&token, world.target())).await;
    refused_open(&world, "other-session", &opening(&token, "")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let records = world.audited("ssmmessages:OpenDataChannel");
        if records.len() >= 2 || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reasons: Vec<&str> = records
        .iter()
        .map(|record| record["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{records:?}");
    assert!(
        reasons.iter().any(|reason| reason.contains("Agent side")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("another session")),
        "{reasons:?}"
    );
    let sessions = SessionClient::new(world.api(&world.admin));
    let mut connection = sessions
        .connect(&ssm_session::client::StartedSession {
            session_id: session_id.clone(),
            stream_url: started["StreamUrl"].as_str().unwrap().to_owned(),
            token_value: token,
            target: world.target().to_owned(),
        })
        .await
        .expect("the token still opens its own side");
    connection.write_all(b"exit\n").await.unwrap();
}

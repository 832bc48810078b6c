//! A relay, a client and an agent on loopback, shared by the socket tests and
//! `examples/throughput.rs` (which includes this file with `#[path]`).

#![allow(dead_code)] // each user takes what it needs

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssm_session::kms::LocalKms;
use ssm_session::net::relay::{Relay, RelayConfig, TokenTable};
use ssm_session::net::{self, Connection, Options, TlsConfig, TokenFuture};
use ssm_session::session::{AgentConfig, ClientConfig, Role, SessionType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// A relay serving one session id, with everything needed to open both ends.
pub struct Loopback {
    pub relay: Option<Relay>,
    pub config: RelayConfig,
    pub tokens: Arc<TokenTable>,
    pub addr: SocketAddr,
    pub session_id: String,
    pub client_tls: TlsConfig,
    pub kms: Arc<LocalKms>,
    /// Pong timeout for both ends: generous, so a CPU-saturated test machine does not look
    /// like a dead network.
    pub pong_timeout: Duration,
}

impl Loopback {
    /// A relay on an ephemeral loopback port; with `tls`, a certificate for `localhost` is
    /// generated and trusted by both ends.
    pub async fn start(tls: bool) -> Loopback {
        let tokens = Arc::new(TokenTable::default());
        let mut config = RelayConfig::new(tokens.clone());
        let mut client_tls = TlsConfig::default();
        if tls {
            let (server, roots) = test_certificate();
            config.tls = Some(server);
            client_tls = roots;
        }
        let relay = Relay::bind("127.0.0.1:0", config.clone())
            .await
            .expect("bind the relay");
        Loopback {
            addr: relay.local_addr(),
            relay: Some(relay),
            config,
            tokens,
            session_id: "loopback-session-1".into(),
            client_tls,
            kms: Arc::new(LocalKms::generate()),
            pong_timeout: Duration::from_secs(10),
        }
    }

    /// Switches to a fresh session id, so that ends of an earlier session cannot interfere.
    pub fn new_session(&mut self) {
        let n = self
            .session_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        self.session_id = format!("loopback-session-{}", n + 1);
    }

    pub fn url(&self) -> String {
        self.relay
            .as_ref()
            .expect("relay running")
            .stream_url(&self.session_id)
    }

    /// Options for `side`: this relay's TLS roots, the shared KMS, a token source issuing
    /// fresh tokens, and liveness timings short enough for tests.
    pub fn options(&self, side: Role) -> Options {
        let tokens = self.tokens.clone();
        let session_id = self.session_id.clone();
        let source = move || -> TokenFuture {
            let token = tokens.issue(&session_id, side);
            Box::pin(async move { Ok(token) })
        };
        let mut options = Options::default()
            .tls(self.client_tls.clone())
            .key_provider(self.kms.clone())
            .token_source(Arc::new(source));
        options.ping_interval = Duration::from_secs(1);
        options.pong_timeout = self.pong_timeout;
        options.backoff.initial = Duration::from_millis(20);
        options.backoff.max = Duration::from_millis(500);
        options.backoff.give_up_after = Duration::from_secs(20);
        options
    }

    /// Opens both ends at once (the agent leads the handshake, so neither can finish alone).
    pub async fn connect_pair(
        &self,
        client: ClientConfig,
        agent: AgentConfig,
    ) -> Result<(Connection, Connection), net::NetError> {
        self.connect_pair_with(client, agent, self.options(Role::Client))
            .await
    }

    /// [`Loopback::connect_pair`] with the client's options given.
    pub async fn connect_pair_with(
        &self,
        client: ClientConfig,
        agent: AgentConfig,
        client_options: Options,
    ) -> Result<(Connection, Connection), net::NetError> {
        let url = self.url();
        let client_token = self.tokens.issue(&self.session_id, Role::Client);
        let agent_token = self.tokens.issue(&self.session_id, Role::Agent);
        let (client, agent) = tokio::join!(
            net::connect(&url, &client_token, client, client_options),
            net::connect_agent(&url, &agent_token, agent, self.options(Role::Agent)),
        );
        Ok((client?, agent?))
    }

    /// Stops the relay (every connection drops) and starts a new one on the same port.
    pub async fn restart_relay(&mut self) {
        drop(self.relay.take());
        let started = Instant::now();
        loop {
            match Relay::bind(self.addr, self.config.clone()).await {
                Ok(relay) => {
                    self.relay = Some(relay);
                    return;
                }
                Err(error) if started.elapsed() < Duration::from_secs(5) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => panic!("could not rebind the relay: {error}"),
            }
        }
    }

    /// Session settings for a transfer: a port session, or an encrypted shell with `encrypt`
    /// (the reference never encrypts port sessions); `compat` keeps the reference wire.
    pub fn configs(&self, encrypt: bool, compat: bool) -> (ClientConfig, AgentConfig) {
        let mut client = ClientConfig::new(&self.session_id, "i-loopback");
        let session_type = if encrypt {
            SessionType::StandardStream
        } else {
            SessionType::Port
        };
        let mut agent = AgentConfig::new(&self.session_id, "i-loopback", session_type);
        if encrypt {
            agent.kms_key_id = Some("alias/loopback".into());
        } else {
            agent.properties =
                Some(serde_json::json!({"portNumber": "22", "type": "LocalPortForwarding"}));
        }
        client.extensions = !compat;
        agent.extensions = !compat;
        (client, agent)
    }
}

/// A server configuration for `localhost` and the client trust that accepts it.
pub fn test_certificate() -> (Arc<rustls::ServerConfig>, TlsConfig) {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let der = cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
    let server = net::server_config(vec![der.clone()], key).expect("server config");
    let roots = TlsConfig::with_roots([der]).expect("roots");
    (server, roots)
}

/// A seeded byte stream: a pseudo-random block of an odd length (1 MiB + 13 bytes) repeated,
/// so that producing and checking it costs a memcpy/memcmp and does not show in throughput
/// figures, while a lost, repeated or reordered message still shifts everything after it.
pub struct Pattern {
    block: Arc<[u8]>,
    at: usize,
}

const PATTERN_LEN: usize = (1 << 20) + 13;

impl Pattern {
    pub fn new(seed: u64) -> Self {
        let mut state = seed | 1;
        let block: Vec<u8> = (0..PATTERN_LEN)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        Pattern {
            block: block.into(),
            at: 0,
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(PATTERN_LEN - self.at);
            buf[done..done + n].copy_from_slice(&self.block[self.at..self.at + n]);
            self.at = (self.at + n) % PATTERN_LEN;
            done += n;
        }
    }
}

/// What one direction of a transfer saw.
#[derive(Debug, Default)]
pub struct Direction {
    pub sent_sha256: [u8; 32],
    pub received_sha256: [u8; 32],
    pub received: u64,
}

/// How a transfer checks the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    pub chunk: usize,
    /// Also hash both ends of each direction with SHA-256.
    pub sha256: bool,
}

/// Sends `transfer.bytes` of seeded bytes each way at once, checks every byte against the
/// pattern as it arrives, then closes. `kill` fires once the client has received that many
/// bytes. Returns both directions (client→agent, agent→client) or what went wrong.
pub async fn exchange(
    client: Connection,
    agent: Connection,
    transfer: Transfer,
    kill: Option<(u64, oneshot::Sender<()>)>,
) -> Result<(Direction, Direction), String> {
    let (client_read, client_write) = client.split();
    let (agent_read, agent_write) = agent.split();
    let up_writer = tokio::spawn(send(client_write, 1, transfer));
    let down_writer = tokio::spawn(send(agent_write, 2, transfer));
    let up_reader = tokio::spawn(receive(agent_read, 1, transfer, None));
    let down_reader = tokio::spawn(receive(client_read, 2, transfer, kill));
    let up_sent = up_writer.await.map_err(|e| e.to_string())??;
    let down_sent = down_writer.await.map_err(|e| e.to_string())??;
    let (up_received, up_count) = up_reader.await.map_err(|e| e.to_string())??;
    let (down_received, down_count) = down_reader.await.map_err(|e| e.to_string())??;
    Ok((
        Direction {
            sent_sha256: up_sent,
            received_sha256: up_received,
            received: up_count,
        },
        Direction {
            sent_sha256: down_sent,
            received_sha256: down_received,
            received: down_count,
        },
    ))
}

async fn send(
    mut writer: net::WriteHalf,
    seed: u64,
    transfer: Transfer,
) -> Result<[u8; 32], String> {
    let mut pattern = Pattern::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0; transfer.chunk];
    let mut left = transfer.bytes;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        pattern.fill(&mut buf[..n]);
        if transfer.sha256 {
            hash.update(&buf[..n]);
        }
        writer
            .write_all(&buf[..n])
            .await
            .map_err(|e| format!("write: {e}"))?;
        left -= n as u64;
    }
    Ok(hash.finalize().into())
}

async fn receive(
    mut reader: net::ReadHalf,
    seed: u64,
    transfer: Transfer,
    mut kill: Option<(u64, oneshot::Sender<()>)>,
) -> Result<([u8; 32], u64), String> {
    let mut pattern = Pattern::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut expected = vec![0; 64 * 1024];
    let mut received = 0u64;
    while received < transfer.bytes {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "stream ended after {received} of {} bytes",
                transfer.bytes
            ));
        }
        pattern.fill(&mut expected[..n]);
        if buf[..n] != expected[..n] {
            return Err(format!("wrong bytes at offset {received}"));
        }
        if transfer.sha256 {
            hash.update(&buf[..n]);
        }
        received += n as u64;
        if kill.as_ref().is_some_and(|(at, _)| received >= *at) {
            let (_, fire) = kill.take().expect("checked");
            let _ = fire.send(());
        }
    }
    Ok((hash.finalize().into(), received))
}

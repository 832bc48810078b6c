//! The service role: one port serving the Systems Manager JSON API subset sessions use, the
//! built-in KMS, agents' control channels and the data-channel relay.
//!
//! * **API** (`POST /`, `X-Amz-Target: AmazonSSM.*` / `TrentService.*`), SigV4-signed with a
//!   principal's access key, authorised by its IAM-style policies (default deny, explicit
//!   deny wins). The real AWS CLI and SDKs work against it with `--endpoint-url`.
//! * **Agents** dial out to `/v1/control-channel/<agent-id>` with a SigV4-signed upgrade and
//!   receive `interactive_shell` messages; they fetch their data-channel token with a signed
//!   `POST /v1/data-channel/<session-id>` (the `CreateDataChannel` analogue).
//! * **Relay**: `/v1/data-channel/<session-id>` pairs the client and the agent by session id
//!   and forwards frames without reading them ([`crate::net::relay::Hub`]); encrypted sessions
//!   stay opaque to the gateway.
//! * **Revoke**: [`Gateway::reload`] (the example calls it on SIGHUP and when the file
//!   changes) re-reads principals, policies and agents and ends every live session whose owner
//!   may no longer start it, with `channel_closed` to both ends.
//! * **Audit**: every API call, session start and end, port stream and recording chunk goes
//!   into a hash-chained JSON-lines log ([`crate::audit`]); shell sessions are recorded as
//!   asciicast v2 streamed live by the agent into `recordings/<session-id>.cast`.
//!
//! # Examples
//!
//! ```no_run
//! use ssm_session::gateway::{Gateway, GatewayConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let state = std::env::temp_dir().join("ssm-gateway");
//! let (config, dev) = GatewayConfig::dev("127.0.0.1:0".parse()?, &state);
//! let gateway = Gateway::start(config, None).await?;
//! println!("{} {}", gateway.endpoint(), dev.agent_id);
//! # Ok(()) }
//! ```

mod agents;
mod api;
mod auth;
mod config;
mod kms;
mod sessions;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

pub(crate) use config::random_hex;
pub use config::{
    AgentIdentity, ConfigError, DEV_ENCRYPTED_SHELL, DEV_KEY_ALIAS, DevSetup, GatewayConfig,
    KmsKeyConfig, PrincipalConfig, TlsFiles,
};

use crate::audit::{ChainWriter, EventKind, Record};
use crate::kms::LocalKms;
use crate::net::http::{self, HttpRequest, Rewind};
use crate::net::relay::{Hub, RelayConfig, TokenTable};
use auth::Auth;
use sessions::Sessions;

/// How long a connection may take to send a request head, and to open TLS.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Read buffer of each websocket the gateway serves.
const GATEWAY_READ_BUFFER: usize = 16 * 1024;
/// How often the configuration file's modification time is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Listening, the state directory or the audit log failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        error: io::Error,
    },
    /// The existing audit log is not a valid chain; it will not be continued.
    #[error("audit log {path}: {error}; move it away to start a new chain")]
    Audit {
        /// The log.
        path: PathBuf,
        /// What is wrong with it.
        error: String,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> GatewayError {
    let what = what.into();
    move |error| GatewayError::Io { what, error }
}

/// A running gateway; dropping it stops it.
pub struct Gateway {
    endpoint: String,
    inner: Arc<Inner>,
    tasks: JoinSet<()>,
}

/// Shared state of the gateway's tasks.
pub(crate) struct Inner {
    pub(crate) region: String,
    pub(crate) account: String,
    pub(crate) state_dir: PathBuf,
    pub(crate) tls: bool,
    config_path: Option<PathBuf>,
    pub(crate) auth: RwLock<Arc<Auth>>,
    pub(crate) hub: Hub,
    pub(crate) tokens: Arc<TokenTable>,
    pub(crate) kms: LocalKms,
    pub(crate) sessions: Sessions,
    pub(crate) agents: agents::Registry,
    audit: Mutex<ChainWriter<std::fs::File>>,
}

impl Gateway {
    /// Listens on `config.listen` and serves until dropped. `config_path`, when given, is
    /// watched: a change reloads it (see [`Gateway::reload`]).
    pub async fn start(
        config: GatewayConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Gateway, GatewayError> {
        config.check()?;
        let state_dir = config.state_dir.clone();
        std::fs::create_dir_all(state_dir.join("recordings"))
            .map_err(io_error(format!("creating {}", state_dir.display())))?;
        let kms = LocalKms::load_or_create(&state_dir.join("kms-master.key"))
            .map_err(io_error("loading the KMS master key"))?;
        let audit_path = state_dir.join("audit.jsonl");
        let audit = open_audit(&audit_path)?;
        let tls = match &config.tls {
            None => None,
            Some(files) => Some(load_tls(files)?),
        };
        let auth = Auth::build(&config).map_err(GatewayError::Config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io_error(format!("listening on {}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(io_error("reading the local address"))?;
        let endpoint = match tls.is_some() {
            true => format!("https://localhost:{}", addr.port()),
            false => format!("http://{addr}"),
        };
        let tokens = Arc::new(TokenTable::new(Duration::from_secs(
            config.token_lifetime_secs,
        )));
        let inner = Arc::new(Inner {
            region: config.region.clone(),
            account: config.account.clone(),
            state_dir,
            tls: tls.is_some(),
            config_path: config_path.clone(),
            auth: RwLock::new(Arc::new(auth)),
            hub: Hub::new(RelayConfig::new(tokens.clone())),
            tokens,
            kms,
            sessions: Sessions::default(),
            agents: agents::Registry::default(),
            audit: Mutex::new(audit),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, tls, inner.clone()));
        tasks.spawn(sessions::watch(inner.clone()));
        if let Some(path) = config_path {
            tasks.spawn(watch_config(path, inner.clone()));
        }
        Ok(Gateway {
            endpoint,
            inner,
            tasks,
        })
    }

    /// The API endpoint, e.g. `http://127.0.0.1:43123` (with TLS the host is `localhost`,
    /// the name generated certificates are made for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Re-reads the configuration file, swaps in its principals, policies, agents and
    /// documents, and ends every live session its owner may no longer start (`revoked`).
    /// Returns the ids of the sessions it ended. A broken file changes nothing.
    pub fn reload(&self) -> Result<Vec<String>, ConfigError> {
        self.inner.reload()
    }

    /// Ids of the sessions running now.
    pub fn live_sessions(&self) -> Vec<String> {
        self.inner.sessions.live_ids()
    }

    /// The audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.inner.state_dir.join("audit.jsonl")
    }

    /// Where the recording of `session_id` is (or will be) written.
    pub fn recording_path(&self, session_id: &str) -> PathBuf {
        self.inner.recording_path(session_id)
    }

    /// Ends every session (`gateway_shutdown`) and stops serving.
    pub async fn shutdown(mut self) {
        self.inner.end_all();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.tasks.shutdown().await;
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn auth(&self) -> Arc<Auth> {
        self.auth
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn reload(&self) -> Result<Vec<String>, ConfigError> {
        let Some(path) = &self.config_path else {
            return Err(ConfigError::Invalid(
                "the gateway was started without a configuration file".into(),
            ));
        };
        let config = GatewayConfig::load(path)?;
        let auth = Arc::new(Auth::build(&config)?);
        *self
            .auth
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = auth.clone();
        let mut record = Record::new(EventKind::PolicyReload);
        record.detail = Some(format!("{} reloaded", path.display()));
        self.audit(record);
        Ok(sessions::revoke_disallowed(self, &auth))
    }

    pub(crate) fn recording_path(&self, session_id: &str) -> PathBuf {
        self.state_dir
            .join("recordings")
            .join(format!("{session_id}.cast"))
    }

    /// Appends to the audit chain. A failing audit log is reported on stderr; the gateway
    /// keeps serving (fail-open), and the chain shows no gap because nothing was appended.
    pub(crate) fn audit(&self, record: Record) {
        let mut log = lock(&self.audit);
        if let Err(error) = log.append(record, wall_ms()) {
            eprintln!("ssm-session gateway: audit log write failed: {error}");
        }
    }

    fn end_all(&self) {
        for id in self.sessions.live_ids() {
            sessions::end(
                self,
                &id,
                crate::audit::EndReason::GatewayShutdown,
                None,
                "the gateway is shutting down",
            );
        }
    }
}

pub(crate) use crate::net::runtime::{lock, wall_ms};

fn open_audit(path: &Path) -> Result<ChainWriter<std::fs::File>, GatewayError> {
    let head = match std::fs::File::open(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(format!("opening {}", path.display()))(error)),
        Ok(file) => crate::audit::verify(io::BufReader::new(file))
            .map_err(|error| GatewayError::Audit {
                path: path.to_owned(),
                error: error.to_string(),
            })?
            .head(),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error(format!("opening {}", path.display())))?;
    Ok(ChainWriter::new(file, head))
}

fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| GatewayError::Tls(format!("{}: {error}", files.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| GatewayError::Tls(format!("{}: {error}", files.key.display())))?;
    crate::net::server_config(chain, key).map_err(|error| GatewayError::Tls(error.to_string()))
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` into `dir`
/// (`gateway-cert.pem`, `gateway-key.pem`) for `--tls` development setups.
pub fn generate_dev_certificate(dir: &Path) -> Result<TlsFiles, GatewayError> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|error| GatewayError::Tls(error.to_string()))?;
    let files = TlsFiles {
        cert: dir.join("gateway-cert.pem"),
        key: dir.join("gateway-key.pem"),
    };
    std::fs::write(&files.cert, certified.cert.pem())
        .map_err(io_error(format!("writing {}", files.cert.display())))?;
    config::write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())
        .map_err(io_error(format!("writing {}", files.key.display())))?;
    Ok(files)
}

/// A generated development environment (see [`prepare_dev`]).
#[derive(Debug)]
pub struct DevEnvironment {
    /// The configuration, also saved at [`DevEnvironment::config_path`].
    pub config: GatewayConfig,
    /// The credentials it contains.
    pub setup: DevSetup,
    /// Where the configuration file is (edit it to change policies live).
    pub config_path: PathBuf,
    /// The CA certificate to trust, with TLS.
    pub ca_cert: Option<PathBuf>,
}

/// Writes a development configuration into `state_dir`: an all-targets principal, a
/// restricted principal that may use no target, one agent identity, a KMS key, and besides the
/// built-in (unencrypted) shell document an encrypted one, [`DEV_ENCRYPTED_SHELL`], naming the
/// key. With `tls`, a self-signed certificate for `localhost` is generated too.
pub fn prepare_dev(
    state_dir: &Path,
    listen: SocketAddr,
    tls: bool,
) -> Result<DevEnvironment, GatewayError> {
    let documents = state_dir.join("documents");
    std::fs::create_dir_all(&documents)
        .map_err(io_error(format!("creating {}", documents.display())))?;
    let (mut config, setup) = GatewayConfig::dev(listen, state_dir);
    let encrypted = serde_json::json!({
        "schemaVersion": "1.0",
        "description": "Interactive shell, KMS-encrypted with the development key",
        "sessionType": "Standard_Stream",
        "inputs": {
            "kmsKeyId": DEV_KEY_ALIAS,
            "runAsEnabled": false,
            "idleSessionTimeout": "20",
            "shellProfile": {"linux": "", "windows": ""}
        }
    });
    let document_path = documents.join(format!("{DEV_ENCRYPTED_SHELL}.json"));
    std::fs::write(
        &document_path,
        serde_json::to_vec_pretty(&encrypted).unwrap_or_default(),
    )
    .map_err(io_error(format!("writing {}", document_path.display())))?;
    let ca_cert = match tls {
        false => None,
        true => {
            let files = generate_dev_certificate(state_dir)?;
            let ca = files.cert.clone();
            config.tls = Some(files);
            Some(ca)
        }
    };
    let config_path = state_dir.join("gateway.json");
    config.save(&config_path)?;
    Ok(DevEnvironment {
        config,
        setup,
        config_path,
        ca_cert,
    })
}

async fn watch_config(path: PathBuf, inner: Arc<Inner>) {
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    let mut last = modified(&path);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let now = modified(&path);
        if now != last {
            last = now;
            if let Err(error) = inner.reload() {
                eprintln!("ssm-session gateway: reload refused, keeping the old policies: {error}");
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    inner: Arc<Inner>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                connections.spawn(serve_tcp(tcp, peer, tls.clone(), inner.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_tcp(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    inner: Arc<Inner>,
) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => serve_connection(tcp, peer, inner).await,
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
            if let Ok(Ok(stream)) = tokio::time::timeout(REQUEST_TIMEOUT, accept).await {
                serve_connection(stream, peer, inner).await;
            }
        }
    }
}

/// Serves requests on one connection until it closes or becomes a websocket.
async fn serve_connection<S>(mut stream: S, peer: SocketAddr, inner: Arc<Inner>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buffer = BytesMut::with_capacity(4096);
    loop {
        let read = tokio::time::timeout(
            REQUEST_TIMEOUT,
            http::read_request(&mut stream, &mut buffer),
        );
        let request = match read.await {
            Ok(Ok(Some(request))) => request,
            Ok(Err(error)) => {
                let body = api::error_body("SerializationException", &error.to_string());
                let _ = http::write_response(&mut stream, 400, &api::JSON, &body).await;
                return;
            }
            _ => return,
        };
        if request.is_upgrade() {
            upgrade(stream, buffer, request, peer, inner).await;
            return;
        }
        let (status, body) = api::handle(&inner, &request, peer).await;
        if http::write_response(&mut stream, status, &api::JSON, &body)
            .await
            .is_err()
        {
            return;
        }
        let closing = request
            .header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        if closing {
            return;
        }
    }
}

/// Completes a websocket upgrade and hands the socket to the relay or the agent registry.
async fn upgrade<S>(
    mut stream: S,
    buffer: BytesMut,
    request: HttpRequest,
    peer: SocketAddr,
    inner: Arc<Inner>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    enum Route {
        Data(String),
        Control(String),
    }
    let route = if let Some(id) = request.path.strip_prefix(crate::net::relay::PATH_PREFIX) {
        Route::Data(id.to_owned())
    } else if let Some(id) = request.path.strip_prefix(crate::control::PATH_PREFIX) {
        match agents::authenticate(&inner, &request, id, peer) {
            Ok(()) => Route::Control(id.to_owned()),
            Err((status, body)) => {
                let _ = http::write_response(&mut stream, status, &api::JSON, &body).await;
                return;
            }
        }
    } else {
        let body = api::error_body("NotFound", "no such websocket endpoint");
        let _ = http::write_response(&mut stream, 404, &api::JSON, &body).await;
        return;
    };
    let Some(key) = request.header("sec-websocket-key") else {
        let body = api::error_body("BadRequest", "missing Sec-WebSocket-Key");
        let _ = http::write_response(&mut stream, 400, &api::JSON, &body).await;
        return;
    };
    let accept = derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let stream = Rewind::new(buffer.freeze(), stream);
    // Smaller read buffers than tungstenite's 128 KiB: a gateway holds two sockets per session
    // (see BENCHMARKS.md, idle sessions).
    let config = crate::net::websocket_config().read_buffer_size(GATEWAY_READ_BUFFER);
    let ws = WebSocketStream::from_raw_socket(stream, WsRole::Server, Some(config)).await;
    match route {
        Route::Data(session_id) => inner.hub.serve(ws, session_id).await,
        Route::Control(agent_id) => agents::serve(inner, ws, agent_id, peer).await,
    }
}

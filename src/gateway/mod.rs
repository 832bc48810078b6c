//! The service role: one port serving the Systems Manager JSON API subset sessions use, the
//! built-in KMS, agents' control channels and the data-channel relay, on hyper (HTTP/1.1 and
//! HTTP/2, TLS through rustls with ALPN), with time and size limits on every request
//! ([`Limits`]).
//!
//! * **API** (`POST /`, `X-Amz-Target: AmazonSSM.*` / `TrentService.*`), SigV4-signed with a
//!   principal's access key, authorised by its IAM-style policies (default deny, explicit
//!   deny wins). The real AWS CLI and SDKs work against it with `--endpoint-url`. Signatures
//!   cover the body, `host` and `x-amz-target`, are scoped to the gateway's region and the
//!   endpoint's service ([`crate::sigv4`]), and those that mint a token or open a channel are
//!   good once.
//! * **Agents** dial out to `/v1/control-channel/<agent-id>` with a SigV4-signed upgrade and
//!   receive `interactive_shell` messages; they fetch their data-channel token with a signed
//!   `POST /v1/data-channel/<session-id>` (the `CreateDataChannel` analogue).
//! * **Relay**: `/v1/data-channel/<session-id>` pairs the client and the agent by session id
//!   and forwards frames without reading them ([`crate::net::relay::Hub`]); encrypted sessions
//!   stay opaque to the gateway.
//! * **Ownership**: only the principal who started a session may resume, terminate or list it,
//!   whatever its policy's resource patterns match; the operator ends others' sessions through
//!   the configuration. [`Quotas`] bound each principal's live sessions and StartSession rate,
//!   and the relay's memory across sessions.
//! * **Revoke**: [`Gateway::reload`] (called when the file's content changes; `ssm-gateway` also
//!   calls it on SIGHUP) re-reads principals, policies and agents, cuts off agents removed from
//!   it (or whose secret changed) with their sessions, and ends every live session whose owner
//!   may no longer start it, with `channel_closed` to both ends. A refused reload is audited.
//! * **Audit**: every API call, session start and end, port stream and recording chunk goes
//!   into a hash-chained JSON-lines log ([`crate::audit`]); shell and command sessions are
//!   recorded as asciicast v2 streamed live by the agent into `recordings/<session-id>.cast`,
//!   except KMS-encrypted ones: their recording stays on the agent and only its digest is
//!   audited (plaintext chunks of such a session are refused). The state
//!   directory and `recordings` are 0700, the log, recordings and KMS master key 0600
//!   (tightened at start if an older version left them looser). Refusals of unauthenticated
//!   requests are recorded a few per source and interval, then summarised; when the log
//!   cannot be written, calls that need it are refused ([`AuditFailure`]).
//! * **Edge**: a peer that has not authenticated gets a bounded share: connections per source
//!   and per second, bytes of body read before its signature is checked, no keep-alive; at
//!   the connection cap the oldest unauthenticated connection makes room ([`Limits`]).
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
//! // … until it is time to stop: live sessions end as `gateway_shutdown`.
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

mod admission;
mod agents;
mod api;
mod auth;
mod config;
mod framing;
mod kms;
mod quota;
mod replay;
mod server;
mod service;
mod sessions;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub(crate) use config::random_hex;
pub use config::{
    AgentIdentity, AuditFailure, ConfigError, DEV_ENCRYPTED_SHELL, DEV_KEY_ALIAS, DevSetup,
    GatewayConfig, KmsKeyConfig, Limits, PrincipalConfig, Quotas, TlsFiles,
};

use crate::audit::ChainWriter;
use crate::kms::LocalKms;
use crate::net::relay::{Hub, RelayConfig, TokenTable};
use auth::Auth;
use service::{Parts, Service};

/// How often the configuration file's content is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// How long shutdown waits for the relay to deliver what it queued toward both ends.
const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Listening, the state directory or the audit log failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The existing audit log is not a valid chain; it will not be continued.
    #[error("audit log {path}: {source}; move it away to start a new chain")]
    Audit {
        /// The log.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::audit::VerifyError,
    },
    /// A TLS certificate or key file is unreadable or not PEM.
    #[error("TLS: {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate and key.
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// A development certificate could not be generated.
    #[error("generating a certificate: {0}")]
    Certificate(#[source] rcgen::Error),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> GatewayError {
    let what = what.into();
    move |source| GatewayError::Io { what, source }
}

/// A running gateway; dropping it stops it at once, [`Gateway::shutdown`] gracefully.
pub struct Gateway {
    endpoint: String,
    local_addr: SocketAddr,
    service: Arc<Service>,
    tasks: JoinSet<()>,
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
        prepare_state_dir(&state_dir)?;
        let kms = LocalKms::load_or_create(&state_dir.join("kms-master.key"))
            .map_err(io_error("loading the KMS master key"))?;
        let audit_path = state_dir.join("audit.jsonl");
        let (audit, audit_file) = open_audit(&audit_path)?;
        let tls = match &config.tls {
            None => None,
            Some(files) => Some(load_tls(files)?),
        };
        let auth = Auth::build(&config)?;
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
        let service = Arc::new(Service::new(
            &config,
            Parts {
                config_path: config_path.clone(),
                tls: tls.is_some(),
                auth,
                hub: Hub::new(RelayConfig {
                    total_limit: config.quotas.relay_memory_bytes,
                    // The session's end, not the relay, decides when its queues go.
                    abandon_after: Duration::from_secs(config.limits.resume_window_secs.max(1))
                        + Duration::from_secs(60),
                    ..RelayConfig::new(tokens.clone())
                }),
                tokens,
                kms,
                audit,
                audit_file,
            },
        ));
        let mut tasks = JoinSet::new();
        tasks.spawn(server::accept_loop(listener, tls, service.clone()));
        tasks.spawn(service.clone().watch_left_behind());
        tasks.spawn(service.clone().summarise_refusals());
        if let Some(path) = config_path {
            tasks.spawn(watch_config(path, service.clone()));
        }
        Ok(Gateway {
            endpoint,
            local_addr: addr,
            service,
            tasks,
        })
    }

    /// The API endpoint, e.g. `http://127.0.0.1:43123` (with TLS the host is `localhost`,
    /// the name generated certificates are made for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The address the gateway listens on (the port chosen when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Re-reads the configuration file, swaps in its principals, policies, agents and
    /// documents, closes the control channel of every agent it removed or re-keyed, and ends
    /// those agents' sessions and every live session its owner may no longer start
    /// (`revoked`). Returns the ids of the sessions it ended. A broken file changes nothing
    /// (and is audited as a refused `policy.reload`).
    pub fn reload(&self) -> Result<Vec<String>, ConfigError> {
        self.service.reload()
    }

    /// Ids of the sessions running now.
    pub fn live_sessions(&self) -> Vec<String> {
        self.service.sessions.live_ids()
    }

    /// The audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.service.state_dir.join("audit.jsonl")
    }

    /// Where the recording of `session_id` is (or will be) written.
    pub fn recording_path(&self, session_id: &str) -> PathBuf {
        self.service.recording_path(session_id)
    }

    /// Stops gracefully: stops accepting connections and lets requests in progress finish,
    /// ends every live session (`gateway_shutdown` in the audit log, `channel_closed` to both
    /// ends), waits a few seconds at most for the relay to deliver what it had queued, closes
    /// the agents' control channels, and flushes the audit log to disk.
    pub async fn shutdown(mut self) {
        tracing::info!(endpoint = %self.endpoint, "shutting down");
        self.service.stopping.cancel();
        self.service.end_all(FLUSH_WAIT).await;
        self.service.flush_refusal_summaries(true);
        self.service.sync_audit();
        self.tasks.shutdown().await;
        tracing::info!("stopped");
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

pub(crate) use crate::net::runtime::{lock, wall_ms};

/// The audit log's writer, continuing its verified chain, and a second handle for fsync.
fn open_audit(path: &Path) -> Result<(ChainWriter<std::fs::File>, std::fs::File), GatewayError> {
    let head = match std::fs::File::open(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(format!("opening {}", path.display()))(error)),
        Ok(file) => crate::audit::verify(io::BufReader::new(file))
            .map_err(|source| GatewayError::Audit {
                path: path.to_owned(),
                source,
            })?
            .head(),
    };
    let file =
        config::append_private(path).map_err(io_error(format!("opening {}", path.display())))?;
    let sync = file
        .try_clone()
        .map_err(io_error(format!("opening {}", path.display())))?;
    Ok((ChainWriter::new(file, head), sync))
}

fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| GatewayError::TlsFile {
            path: files.cert.clone(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| GatewayError::TlsFile {
        path: files.key.clone(),
        source,
    })?;
    crate::net::server_config(chain, key).map_err(GatewayError::Tls)
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` into `dir`
/// (`gateway-cert.pem`, `gateway-key.pem`) for `--tls` development setups.
pub fn generate_dev_certificate(dir: &Path) -> Result<TlsFiles, GatewayError> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(GatewayError::Certificate)?;
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
    /// Each configured agent's id and the file (0600) holding its secret, for
    /// `ssm-agent --agent-secret-file`: `agent-secret` for the first, `agent-secret-N` for
    /// the N-th.
    pub agents: Vec<(String, PathBuf)>,
}

/// Where a development set-up keeps its credentials (0600), next to `gateway.json`.
const DEV_SETUP_FILE: &str = "dev-setup.json";

/// Writes each configured agent's secret into `state_dir` (0600), as [`DevEnvironment::agents`]
/// lists them.
fn write_agent_secrets(
    state_dir: &Path,
    config: &GatewayConfig,
) -> Result<Vec<(String, PathBuf)>, GatewayError> {
    let mut written = Vec::new();
    for (index, agent) in config.agents.iter().enumerate() {
        let path = match index {
            0 => state_dir.join("agent-secret"),
            n => state_dir.join(format!("agent-secret-{}", n + 1)),
        };
        config::write_private(&path, format!("{}\n", agent.secret).as_bytes())
            .map_err(io_error(format!("writing {}", path.display())))?;
        written.push((agent.id.clone(), path));
    }
    Ok(written)
}

/// A development environment that survives restarts: the first call on an empty
/// `state_dir` generates one as [`prepare_dev`] does — on a free port of `listen`'s address
/// (default 127.0.0.1) unless `listen` names a port — and keeps its credentials in
/// `state_dir/dev-setup.json` (0600); later calls load `gateway.json` and those credentials
/// instead, so the endpoint, agent ids and secrets, keys, KMS master key and certificate
/// stay the same (the saved port must be free when the gateway starts).
/// `agents` (at least 1) agent identities are configured, generated as needed; `tls` adds a
/// certificate to a set-up that had none.
pub fn open_dev(
    state_dir: &Path,
    listen: Option<SocketAddr>,
    tls: bool,
    agents: usize,
) -> Result<DevEnvironment, GatewayError> {
    let config_path = state_dir.join("gateway.json");
    let setup_path = state_dir.join(DEV_SETUP_FILE);
    if !config_path.exists() {
        let mut listen = listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        if listen.port() == 0 {
            // Chosen now, and saved, so that the next start listens on the same port.
            let probe = std::net::TcpListener::bind(listen)
                .map_err(io_error(format!("finding a free port on {}", listen.ip())))?;
            listen = probe
                .local_addr()
                .map_err(io_error("reading the local address"))?;
        }
        let mut dev = prepare_dev(state_dir, listen, tls)?;
        if dev.config.add_dev_agents(agents) {
            dev.config.save(&config_path)?;
            dev.agents = write_agent_secrets(state_dir, &dev.config)?;
        }
        let setup = serde_json::to_vec_pretty(&dev.setup).unwrap_or_default();
        config::write_private(&setup_path, &setup)
            .map_err(io_error(format!("writing {}", setup_path.display())))?;
        return Ok(dev);
    }
    let text = std::fs::read(&setup_path).map_err(|error| GatewayError::Io {
        what: format!(
            "{} exists but {} cannot be read, so this is not a --dev state directory (run \
             --config {} instead, or use a new --state-dir)",
            config_path.display(),
            setup_path.display(),
            config_path.display()
        ),
        source: error,
    })?;
    let setup: DevSetup = serde_json::from_slice(&text).map_err(|error| GatewayError::Io {
        what: format!("{} is not a development set-up", setup_path.display()),
        source: io::Error::new(io::ErrorKind::InvalidData, error),
    })?;
    let mut config = GatewayConfig::load(&config_path)?;
    let mut changed = config.add_dev_agents(agents);
    if tls && config.tls.is_none() {
        config.tls = Some(generate_dev_certificate(state_dir)?);
        changed = true;
    }
    if changed {
        config.save(&config_path)?;
    }
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let agents = write_agent_secrets(state_dir, &config)?;
    Ok(DevEnvironment {
        ca_cert: config.tls.as_ref().map(|files| files.cert.clone()),
        config,
        setup,
        config_path,
        agents,
    })
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
    let agents = write_agent_secrets(state_dir, &config)?;
    Ok(DevEnvironment {
        config,
        setup,
        config_path,
        ca_cert,
        agents,
    })
}

/// Creates the state directory and its `recordings` 0700 and makes what an older version left
/// there the owner's alone: the audit log and recordings hold what users typed and saw.
fn prepare_state_dir(state_dir: &Path) -> Result<(), GatewayError> {
    let recordings = state_dir.join("recordings");
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&recordings)
        .map_err(io_error(format!("creating {}", recordings.display())))?;
    let mut private = vec![
        state_dir.to_owned(),
        recordings.clone(),
        state_dir.join("audit.jsonl"),
        state_dir.join("kms-master.key"),
    ];
    let listed = std::fs::read_dir(&recordings)
        .map_err(io_error(format!("reading {}", recordings.display())))?;
    private.extend(listed.filter_map(|entry| Some(entry.ok()?.path())));
    for path in private {
        config::tighten(&path).map_err(io_error(format!(
            "making {} private (mode 0700/0600)",
            path.display()
        )))?;
    }
    Ok(())
}

/// Reloads when the file's content changes (by its SHA-256): an edit that keeps the mtime is
/// seen, a touch that changes nothing is not.
async fn watch_config(path: PathBuf, service: Arc<Service>) {
    use sha2::{Digest, Sha256};
    let content = |path: &Path| std::fs::read(path).ok().map(Sha256::digest);
    let mut last = content(&path);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let now = content(&path);
        if now != last {
            last = now;
            // A refusal is logged and audited by `reload`; the old configuration stays.
            let _ = service.reload();
        }
    }
}

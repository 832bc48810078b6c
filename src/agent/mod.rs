//! The host side: dials out to the gateway's control channel (no listening port), runs each
//! session it is sent, reports how it ended, and records shells and commands (streamed live
//! to the gateway, or kept on this host for KMS-encrypted sessions: see `recorder`).
//!
//! * `Standard_Stream` and `InteractiveCommands` run in a PTY: every received byte, Ctrl-C
//!   and the other control bytes included, goes to the PTY; only the process's exit, the
//!   client, the gateway, the idle timeout or the maximum duration end the session.
//! * `NonInteractiveCommands` run with separate stdout/stderr and report the exit code.
//! * Shells and commands run as the document's run-as user when it enables run-as, else — for
//!   an agent running as root — as [`AgentSettings::default_run_as`] (`ssm-user`).
//! * `Port` forwards to `localhost:<portNumber>` or, when the document allows, a remote host
//!   (resolved once and dialled at exactly the addresses checked; link-local and metadata
//!   addresses refused unless [`AgentSettings::allow_link_local`]; a refusal reaches the
//!   client as the session's `channel_closed` output);
//!   smux-multiplexed or basic as the versions decide (PROTOCOL.md §9.2).
//!
//! # Examples
//!
//! ```no_run
//! use ssm_session::agent::{self, AgentSettings};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = AgentSettings::new("http://127.0.0.1:8080", "mi-0123456789abcdef0", "secret")?;
//! // Reconnects until the future completes (the program passes SIGTERM/Ctrl-C), then stops
//! // gracefully.
//! agent::run(settings, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod account;
pub mod backoff;
pub mod config;
mod exec;
mod port;
mod reap;
mod recorder;
mod shell;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::aws::{ApiClient, HttpKms, unix_seconds};
use crate::control::{
    ControlMessage, EndReason, OpenControlChannelInput, RecordingSummary, SessionReport,
    StartSession,
};
use crate::document::{AgentSessionRequest, SessionType};
use crate::entropy::SystemEntropy;
use crate::kms::KeyProvider;
use crate::net::runtime::{Liveness, jittered, lock, random_uuid, wall_ms};
use crate::net::{self, Connection, Options, TlsConfig, TokenError};
use crate::session::AgentConfig;
use crate::sigv4::{self, Credentials};
use backoff::{Backoff, Failure};

/// The version this agent reports (above every gate of PROTOCOL.md §14).
pub const AGENT_VERSION: &str = "3.3.1957.0";
/// Control messages waiting while the control channel is down; beyond this, recording chunks
/// are dropped (the recording marks the gap) and reports wait.
const OUTBOX: usize = 1024;
/// The control channel is pinged this often…
const PING_EVERY: Duration = Duration::from_secs(20);
/// …and redialled when nothing at all (pongs included) answers a ping for this long.
const PONG_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the agent needs to run.
#[derive(Clone)]
#[non_exhaustive]
pub struct AgentSettings {
    /// The gateway endpoint, `http(s)://host:port`.
    pub endpoint: String,
    /// This host's id (the target users name).
    pub agent_id: String,
    /// Its secret.
    pub agent_secret: String,
    /// Region to sign for.
    pub region: String,
    /// Trust for `https`/`wss`.
    pub tls: TlsConfig,
    /// Shell for `Standard_Stream` sessions.
    pub shell: String,
    /// Allow port sessions to link-local and metadata addresses (169.254.0.0/16, fe80::/10,
    /// fd00:ec2::254, and 169.254.0.0/16 inside IPv4-mapped, IPv4-compatible, SIIT, NAT64,
    /// 6to4 and Teredo IPv6 addresses). Either way a destination is resolved once, refused
    /// when that fails, and dialled only at the addresses checked.
    pub allow_link_local: bool,
    /// First reconnection delay after a network failure (doubles up to
    /// [`AgentSettings::max_backoff`], with jitter; see [`backoff`]).
    pub initial_backoff: Duration,
    /// Largest reconnection delay after network failures.
    pub max_backoff: Duration,
    /// First reconnection delay after the gateway refused the agent (4xx: unknown id, wrong
    /// secret, clock skew, removed): doubles up to [`AgentSettings::max_refused_backoff`].
    pub initial_refused_backoff: Duration,
    /// Largest reconnection delay after refusals.
    pub max_refused_backoff: Duration,
    /// Where data keys of encrypted sessions are decrypted; `None`: the gateway's KMS, signed
    /// with the agent's own identity.
    pub key_provider: Option<Arc<dyn KeyProvider>>,
    /// Who shells and commands run as when their document enables no run-as and the agent
    /// runs as root: this non-root user (default `ssm-user`, created with `useradd` when
    /// missing, as AWS does). `None` runs them as the agent's own user (root).
    pub default_run_as: Option<String>,
    /// Where recordings of KMS-encrypted sessions are kept, on this host: they never reach
    /// the gateway, which audits only their digest. Default `/var/lib/ssm-agent/recordings`
    /// for root, else `~/.local/state/ssm-agent/recordings`.
    pub recordings_dir: PathBuf,
}

impl fmt::Debug for AgentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSettings")
            .field("endpoint", &self.endpoint)
            .field("agent_id", &self.agent_id)
            .field("region", &self.region)
            .field("shell", &self.shell)
            .finish_non_exhaustive()
    }
}

impl AgentSettings {
    /// Settings for `agent_id` at `endpoint` with the default shell (`$SHELL`, else
    /// `/bin/sh`), region `us-east-1`, webpki roots.
    pub fn new(
        endpoint: &str,
        agent_id: &str,
        agent_secret: &str,
    ) -> Result<AgentSettings, crate::aws::ApiCallError> {
        crate::net::http::Endpoint::parse(endpoint).map_err(crate::aws::ApiCallError::Endpoint)?;
        Ok(AgentSettings {
            endpoint: endpoint.to_owned(),
            agent_id: agent_id.to_owned(),
            agent_secret: agent_secret.to_owned(),
            region: "us-east-1".into(),
            tls: TlsConfig::default(),
            shell: std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()),
            allow_link_local: false,
            initial_backoff: backoff::NETWORK_INITIAL,
            max_backoff: backoff::NETWORK_MAX,
            initial_refused_backoff: backoff::REFUSED_INITIAL,
            max_refused_backoff: backoff::REFUSED_MAX,
            key_provider: None,
            default_run_as: Some(DEFAULT_RUN_AS.into()),
            recordings_dir: default_recordings_dir(),
        })
    }

    /// Trust `tls` for the gateway.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Decrypt data keys with `kms` (e.g. AWS KMS with the host's role) instead of the
    /// gateway's KMS.
    pub fn key_provider(mut self, kms: Arc<dyn KeyProvider>) -> Self {
        self.key_provider = Some(kms);
        self
    }
}

/// The non-root user sessions of a root agent run as by default, as with AWS.
pub const DEFAULT_RUN_AS: &str = "ssm-user";

/// `/var/lib/ssm-agent/recordings` for root, else under the user's state directory.
fn default_recordings_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/ssm-agent/recordings");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("ssm-agent/recordings")
}

/// What session tasks share.
pub(crate) struct Context {
    pub(crate) settings: AgentSettings,
    pub(crate) api: ApiClient,
    pub(crate) outbox: mpsc::Sender<ControlMessage>,
    /// Sessions running now, by id.
    running: Mutex<HashMap<String, RunningSession>>,
    /// Cancelled once the agent is stopping: cancelled sessions then end as `AgentShutdown`.
    stop: CancellationToken,
}

/// A session task: cancelling asks it to end (and report); aborting is the last resort once
/// the shutdown grace period is over.
struct RunningSession {
    cancel: CancellationToken,
    task: Option<tokio::task::AbortHandle>,
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The settings name an unusable endpoint.
    #[error("the gateway endpoint is unusable: {0}")]
    Endpoint(#[from] crate::aws::ApiCallError),
}

/// How long a stopping agent waits for its sessions to end and their reports to be sent.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the agent until `shutdown` completes: keeps the control channel up (reconnecting with
/// back-off and jitter) and runs the sessions it is sent. Then it stops gracefully: every
/// live session ends (reported as `agent_shutdown`, its buffered output flushed) and the
/// reports reach the gateway, within [`SHUTDOWN_GRACE`].
///
/// # Errors
///
/// Only when the settings are unusable; connection failures are retried (and logged).
pub async fn run(
    settings: AgentSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let api = ApiClient::new(
        &settings.endpoint,
        &settings.region,
        Credentials::new(&settings.agent_id, &settings.agent_secret, None),
        settings.tls.clone(),
    )?;
    let (outbox_tx, mut outbox) = mpsc::channel(OUTBOX);
    let context = Arc::new(Context {
        settings: settings.clone(),
        api,
        outbox: outbox_tx,
        running: Mutex::default(),
        stop: CancellationToken::new(),
    });
    // Messages taken from the outbox whose sending failed: sent first on the next
    // connection, in order, so no report is lost or overtaken.
    let mut unsent = VecDeque::new();
    let serve = async {
        let mut backoff = Backoff::new(
            (settings.initial_backoff, settings.max_backoff),
            (
                settings.initial_refused_backoff,
                settings.max_refused_backoff,
            ),
        );
        let mut entropy = SystemEntropy::new();
        loop {
            let started = std::time::Instant::now();
            let outcome = control_channel(&context, &mut outbox, &mut unsent).await;
            let stopping = context.stop.is_cancelled();
            if stopping
                && unsent.is_empty()
                && outbox.is_empty()
                && lock(&context.running).is_empty()
            {
                return;
            }
            let failure = match &outcome {
                Err(DialError::Refused(_)) => Failure::Refused,
                Ok(_) | Err(DialError::Network(_)) => Failure::Network,
            };
            if outcome.is_ok() && started.elapsed() >= backoff::STABLE_AFTER {
                backoff.reset();
            }
            // Stopping: the grace period is short, so redial at once rather than back off.
            let delay = match stopping {
                true => jittered(settings.initial_backoff, &mut entropy),
                false => backoff.next(failure, &mut entropy),
            };
            let retry = format!("{:.1}s", delay.as_secs_f64());
            match outcome {
                Ok(why) => tracing::info!(
                    endpoint = %settings.endpoint,
                    agent_id = %settings.agent_id,
                    reason = %why,
                    "disconnected, reconnecting in {retry}"
                ),
                Err(DialError::Refused(reason)) => tracing::error!(
                    endpoint = %settings.endpoint,
                    agent_id = %settings.agent_id,
                    "the gateway refused this agent: {reason}; retrying in {retry}"
                ),
                Err(DialError::Network(error)) => tracing::warn!(
                    endpoint = %settings.endpoint,
                    %error,
                    "cannot reach the gateway; retrying in {retry}"
                ),
            }
            // A stop during a long back-off (refusals wait up to minutes) is seen at once.
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = context.stop.cancelled(), if !stopping => {}
            }
            if context.stop.is_cancelled()
                && unsent.is_empty()
                && outbox.is_empty()
                && lock(&context.running).is_empty()
            {
                return;
            }
        }
    };
    tokio::pin!(serve, shutdown);
    tokio::select! {
        () = &mut serve => return Ok(()),
        () = &mut shutdown => {}
    }
    tracing::info!(
        live_sessions = lock(&context.running).len(),
        "stopping: ending live sessions"
    );
    // Every session's token is a child of this one.
    context.stop.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, serve).await.is_err() {
        let running = std::mem::take(&mut *lock(&context.running));
        tracing::warn!(
            unfinished = running.len(),
            "stopped before every session report reached the gateway"
        );
        for session in running.into_values() {
            if let Some(task) = session.task {
                task.abort(); // its processes are killed when the task is dropped
            }
        }
    }
    Ok(())
}

/// Why a control channel could not be opened.
#[derive(Debug)]
enum DialError {
    /// The gateway refused this agent (HTTP 4xx, or a policy close): its reason.
    Refused(String),
    /// Anything else: no answer, a broken connection, a server error.
    Network(String),
}

impl DialError {
    /// Reads a refused websocket handshake: 4xx is a refusal whose reason the gateway puts in
    /// its JSON body (`{"__type": …, "message": …}`) or `x-amzn-ErrorType` header.
    fn of(error: tokio_tungstenite::tungstenite::Error) -> DialError {
        use tokio_tungstenite::tungstenite::Error;
        let Error::Http(response) = error else {
            return DialError::Network(error.to_string());
        };
        let status = response.status();
        let reason = refusal_reason(
            status.as_u16(),
            response.body().as_deref().unwrap_or_default(),
            response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|value| value.to_str().ok()),
        );
        match status.is_client_error() {
            true => DialError::Refused(reason),
            false => DialError::Network(reason),
        }
    }
}

/// What the gateway said of a refused handshake: its JSON error's message and type, else its
/// error-type header, else the status ([`peer_text`]).
fn refusal_reason(status: u16, body: &[u8], error_type: Option<&str>) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let parsed = serde_json::from_slice::<Body>(body).ok();
    let kind = parsed
        .as_ref()
        .and_then(|body| body.kind.clone())
        .or_else(|| error_type.map(|kind| kind.split(':').next().unwrap_or(kind).to_owned()));
    let message = parsed.and_then(|body| body.message);
    let reason = match (message, kind) {
        (Some(message), Some(kind)) => format!("{message} ({kind}, HTTP {status})"),
        (Some(message), None) => format!("{message} (HTTP {status})"),
        (None, Some(kind)) => format!("{kind} (HTTP {status})"),
        (None, None) => format!("HTTP {status} without a reason"),
    };
    peer_text(&reason)
}

/// The gateway's `text`, fit for this host's log: cut to 512 characters, control characters
/// replaced.
fn peer_text(text: &str) -> String {
    text.chars()
        .take(512)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One control-channel connection. `Ok(why it ended)` once it was open: it dropped, or the
/// agent is stopping and every session has ended and been reported.
async fn control_channel(
    context: &Arc<Context>,
    outbox: &mut mpsc::Receiver<ControlMessage>,
    unsent: &mut VecDeque<ControlMessage>,
) -> Result<String, DialError> {
    let settings = &context.settings;
    let endpoint = context.api.endpoint();
    let path = format!("{}{}", crate::control::PATH_PREFIX, settings.agent_id);
    let query = "role=subscribe&stream=input";
    // Signed and unique, so that a reconnection within the same second is a new signature.
    let nonce = crate::aws::invocation_id();
    let headers = vec![("host".to_owned(), endpoint.authority()), nonce.clone()];
    let request = sigv4::Request {
        method: "GET",
        path: &path,
        query,
        headers: &headers,
        body: b"",
    };
    let credentials = Credentials::new(&settings.agent_id, &settings.agent_secret, None);
    let signature = sigv4::sign(
        &request,
        &credentials,
        &settings.region,
        "ssmmessages",
        unix_seconds(),
    );
    let url = endpoint.websocket_url(&format!("{path}?{query}"));
    let uri = url
        .parse()
        .map_err(|error| DialError::Network(format!("{url}: {error}")))?;
    let mut builder = ClientRequestBuilder::new(uri);
    for (name, value) in std::iter::once(nonce).chain(signature) {
        builder = builder.with_header(name, value);
    }
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        builder,
        Some(crate::net::websocket_config()),
        true,
        Some(tokio_tungstenite::Connector::Rustls(settings.tls.client())),
    );
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .map_err(|_| DialError::Network("no answer within 30 s".to_owned()))?
        .map_err(DialError::of)?;
    let opening = OpenControlChannelInput {
        message_schema_version: "1.0".into(),
        request_id: random_uuid().to_string(),
        agent_version: AGENT_VERSION.into(),
        platform_type: "linux".into(),
        extensions: vec![crate::control::EXTENSIONS.into()],
    };
    let opening =
        serde_json::to_string(&opening).map_err(|error| DialError::Network(error.to_string()))?;
    ws.send(Message::text(opening))
        .await
        .map_err(|error| DialError::Network(error.to_string()))?;
    tracing::info!(endpoint = %settings.endpoint, agent_id = %settings.agent_id, "connected to the gateway");
    while let Some(message) = unsent.front() {
        let wire = message.encode(random_uuid(), wall_ms());
        if let Err(error) = ws.send(Message::Binary(wire)).await {
            return Ok(format!("send failed: {error}"));
        }
        unsent.pop_front();
    }
    let mut liveness = Liveness::new(std::time::Instant::now(), PING_EVERY, PONG_TIMEOUT);
    let mut drained = tokio::time::interval(Duration::from_millis(50));
    loop {
        let stopping = context.stop.is_cancelled();
        if stopping && outbox.is_empty() && lock(&context.running).is_empty() {
            // Read until the gateway's Close, so that closing does not reset a connection
            // whose last report the gateway has not read yet.
            let _ = ws.close(None).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while ws.next().await.is_some_and(|message| message.is_ok()) {}
            })
            .await;
            return Ok("the agent is stopping".into());
        }
        tokio::select! {
            _ = drained.tick(), if stopping => {}
            () = context.stop.cancelled(), if !stopping => {}
            message = outbox.recv() => {
                let Some(message) = message else { return Ok("the agent is stopping".into()) };
                let wire = message.encode(random_uuid(), wall_ms());
                if let Err(error) = ws.send(Message::Binary(wire)).await {
                    // Kept for the next connection: reports must not be lost.
                    unsent.push_back(message);
                    return Ok(format!("send failed: {error}"));
                }
            }
            () = tokio::time::sleep_until(liveness.deadline().into()) => {
                let due = match liveness.poll(std::time::Instant::now(), true) {
                    Ok(due) => due,
                    Err(unanswered) => return Ok(unanswered.to_string()),
                };
                if due && let Err(error) = ws.send(Message::Ping(Default::default())).await {
                    return Ok(format!("send failed: {error}"));
                }
            }
            received = ws.next() => {
                liveness.heard();
                let message = match received {
                    Some(Ok(Message::Binary(message))) => message,
                    Some(Ok(Message::Close(frame))) => return closed(frame),
                    None => return Ok("the connection ended".into()),
                    Some(Err(error)) => return Ok(format!("connection lost: {error}")),
                    Some(Ok(_)) => continue,
                };
                match ControlMessage::decode(message) {
                    Ok(ControlMessage::StartSession(start)) => spawn_session(context, start),
                    Ok(ControlMessage::ChannelClosed(closed)) => {
                        if let Some(session) = lock(&context.running).get(&closed.session_id) {
                            session.cancel.cancel();
                        }
                    }
                    Ok(other) => tracing::debug!(?other, "control message ignored"),
                    Err(error) => tracing::warn!(%error, "undecodable control message dropped"),
                }
            }
        }
    }
}

/// What a Close from the gateway means: a policy close (1008) refuses this agent (e.g. it
/// was removed from the configuration as its channel opened), with the gateway's reason.
fn closed(
    frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
) -> Result<String, DialError> {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let Some(frame) = frame else {
        return Ok("closed by the gateway".into());
    };
    let reason = peer_text(&frame.reason);
    match frame.code {
        CloseCode::Policy => Err(DialError::Refused(reason)),
        code if reason.is_empty() => Ok(format!("closed by the gateway ({code})")),
        code => Ok(format!("closed by the gateway ({code}): {reason}")),
    }
}

/// Runs `start` in its own task; its report is queued before the session leaves the running
/// set, so a stopping agent waits for it.
fn spawn_session(context: &Arc<Context>, start: StartSession) {
    let cancel = context.stop.child_token();
    let id = start.task_id.clone();
    {
        let mut running = lock(&context.running);
        if running.contains_key(&id) {
            return tracing::warn!(session_id = %id, "session already running: start ignored");
        }
        let session = RunningSession {
            cancel: cancel.clone(),
            task: None,
        };
        running.insert(id.clone(), session);
    }
    let task = tokio::spawn({
        let context = context.clone();
        let id = id.clone();
        async move {
            let report = run_session(&context, start, cancel).await;
            let _ = context
                .outbox
                .send(ControlMessage::SessionReport(report))
                .await;
            lock(&context.running).remove(&id);
        }
    });
    // Unless it is already over (then the entry is gone).
    if let Some(session) = lock(&context.running).get_mut(&id) {
        session.task = Some(task.abort_handle());
    }
}

/// How a session ended, as reported to the gateway.
pub(crate) struct Outcome {
    pub(crate) reason: EndReason,
    pub(crate) exit_code: Option<i32>,
    pub(crate) output: String,
    /// The recording kept on the agent (encrypted sessions).
    pub(crate) recording: Option<RecordingSummary>,
}

impl Outcome {
    pub(crate) fn failed(output: impl Into<String>) -> Outcome {
        Outcome {
            reason: EndReason::HandshakeFailed,
            exit_code: None,
            output: output.into(),
            recording: None,
        }
    }

    /// Cancelled before it started (by the gateway, or by the agent stopping).
    fn cancelled() -> Outcome {
        Outcome {
            reason: EndReason::Terminated,
            exit_code: None,
            output: String::new(),
            recording: None,
        }
    }

    /// The outcome of a session that ended from outside the process.
    pub(crate) fn from_ending(ending: &net::Ending) -> Outcome {
        let reason = match ending {
            net::Ending::ChannelClosed { .. } => EndReason::Terminated,
            net::Ending::Closed | net::Ending::DrainTimedOut { .. } => EndReason::ClientExit,
            net::Ending::Failed(_) => EndReason::NetworkLost,
        };
        Outcome {
            reason,
            exit_code: None,
            output: ending.to_string(),
            recording: None,
        }
    }
}

async fn run_session(
    context: &Arc<Context>,
    start: StartSession,
    cancel: CancellationToken,
) -> SessionReport {
    let settings = &context.settings;
    let began = std::time::Instant::now();
    let span = tracing::info_span!(
        "session",
        session_id = %start.task_id,
        target = %settings.agent_id,
        principal = tracing::field::Empty,
        session_type = tracing::field::Empty,
    );
    let mut outcome = async {
        let request = match AgentSessionRequest::from_json(&start.content) {
            Ok(request) => request,
            Err(error) => return Outcome::failed(format!("unusable session request: {error}")),
        };
        let span = tracing::Span::current();
        span.record("principal", request.session_owner.as_str());
        span.record("session_type", request.session.session_type.as_str());
        tracing::info!(
            document = %request.document_name,
            run_as = ?request.run_as_user,
            "session starting"
        );
        let opened = tokio::select! {
            opened = open_data_channel(context, &start.task_id, &request) => opened,
            () = cancel.cancelled() => return Outcome::cancelled(),
        };
        match opened {
            Err(error) => Outcome::failed(error),
            Ok(connection) => run_document(context, connection, &request, cancel).await,
        }
    }
    .instrument(span.clone())
    .await;
    if context.stop.is_cancelled() && outcome.reason == EndReason::Terminated {
        outcome.reason = EndReason::AgentShutdown;
        outcome.output = "the agent was stopped".into();
    }
    let duration = format!("{:.1}s", began.elapsed().as_secs_f64());
    span.in_scope(|| match outcome.reason {
        EndReason::HandshakeFailed => {
            tracing::warn!(reason = %outcome.reason, output = %outcome.output, %duration, "session failed");
        }
        reason => {
            tracing::info!(%reason, exit_code = ?outcome.exit_code, %duration, "session ended")
        }
    });
    let mut report = SessionReport::new(
        &start.task_id,
        &settings.agent_id,
        outcome.reason,
        outcome.exit_code,
        outcome.output,
    );
    report.recording = outcome.recording;
    report
}

async fn run_document(
    context: &Arc<Context>,
    connection: Connection,
    request: &AgentSessionRequest,
    cancel: CancellationToken,
) -> Outcome {
    match request.session.session_type {
        SessionType::StandardStream | SessionType::InteractiveCommands => {
            shell::run(context, connection, request, cancel).await
        }
        SessionType::NonInteractiveCommands => {
            exec::run(context, connection, request, cancel).await
        }
        SessionType::Port => port::run(context, connection, request, cancel).await,
    }
}

/// `CreateDataChannel` for a token, then the data channel itself.
async fn open_data_channel(
    context: &Arc<Context>,
    session_id: &str,
    request: &AgentSessionRequest,
) -> Result<Connection, String> {
    let settings = &context.settings;
    let token = create_data_channel(&context.api, session_id)
        .await
        .map_err(|error| format!("CreateDataChannel: {error}"))?;
    let mut config = AgentConfig::new(session_id, &settings.agent_id, request.session.session_type);
    match request.session.session_type {
        SessionType::Port => config.properties = Some(request.session.properties.clone()),
        _ => config.kms_key_id = request.session.preferences.kms_key_id.clone(),
    }
    config.separate_output_stream =
        request.session.session_type == SessionType::NonInteractiveCommands;
    let api = context.api.clone();
    let id = session_id.to_owned();
    let token_source = move || -> net::TokenFuture {
        let api = api.clone();
        let id = id.clone();
        Box::pin(async move {
            create_data_channel(&api, &id)
                .await
                .map_err(|error| match error.code() {
                    Some("DoesNotExistException" | "AccessDeniedException") => {
                        TokenError::Final(Box::new(error))
                    }
                    _ => TokenError::Retry(Box::new(error)),
                })
        })
    };
    let options = Options::default()
        .tls(settings.tls.clone())
        .key_provider(match &settings.key_provider {
            Some(kms) => kms.clone(),
            None => Arc::new(HttpKms::new(context.api.clone())),
        })
        .token_source(Arc::new(token_source));
    let url = context.api.endpoint().websocket_url(&format!(
        "{}{session_id}?role=publish_subscribe",
        crate::net::relay::PATH_PREFIX
    ));
    net::connect_agent(&url, &token, config, options)
        .await
        .map_err(|error| format!("data channel: {error}"))
}

async fn create_data_channel(
    api: &ApiClient,
    session_id: &str,
) -> Result<String, crate::aws::ApiCallError> {
    let path = format!("{}{session_id}", crate::net::relay::PATH_PREFIX);
    let answer = api
        .post("ssmmessages", &path, None, &serde_json::json!({}))
        .await?;
    answer
        .get("TokenValue")
        .and_then(|token| token.as_str())
        .map(str::to_owned)
        .ok_or_else(|| crate::aws::ApiCallError::Answer("no TokenValue".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_what_the_gateway_said() {
        let body =
            br#"{"__type":"InvalidSignatureException","message":"the signature does not match"}"#;
        assert_eq!(
            refusal_reason(403, body, None),
            "the signature does not match (InvalidSignatureException, HTTP 403)"
        );
        assert_eq!(
            refusal_reason(
                403,
                b"",
                Some("UnrecognizedClientException:http://internal")
            ),
            "UnrecognizedClientException (HTTP 403)"
        );
        assert_eq!(
            refusal_reason(403, b"<html>", None),
            "HTTP 403 without a reason"
        );
        let hostile = format!(
            r#"{{"message":"a\u001b[31mred\nline{}"}}"#,
            "x".repeat(2000)
        );
        let told = refusal_reason(400, hostile.as_bytes(), None);
        assert!(told.starts_with("a [31mred line"), "{told}");
        assert_eq!(told.chars().count(), 512);
    }

    #[test]
    fn a_policy_close_is_a_refusal_and_others_are_drops() {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        let frame = |code, reason: &str| {
            Some(CloseFrame {
                code,
                reason: reason.to_owned().into(),
            })
        };
        assert!(matches!(
            closed(frame(CloseCode::Policy, "agent mi-1 was removed")),
            Err(DialError::Refused(reason)) if reason == "agent mi-1 was removed"
        ));
        assert!(matches!(
            closed(frame(CloseCode::Away, "")),
            Ok(why) if why == "closed by the gateway (1001)"
        ));
        assert!(matches!(closed(None), Ok(why) if why == "closed by the gateway"));
    }
}

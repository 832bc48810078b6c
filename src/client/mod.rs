//! The user side: `StartSession` / `ResumeSession` / `TerminateSession` /
//! `DescribeSessions` against a gateway, then the session itself as an interactive terminal
//! ([`run_terminal`]) or a local port forwarder ([`run_port_forwarding`]), and the exit
//! statuses of client programs ([`exit`]).
//!
//! Available with the `client` feature alone (`default-features = false, features =
//! ["client"]`): it brings in the API client, the websocket transport, `rustix` for the
//! terminal and tokio's stdio and signals, but no PTY, process spawning, certificate
//! generation or gateway code. `ResumeSession` after a lost connection signs with the
//! [`ApiClient`]'s [`CredentialSource`](crate::aws::CredentialSource) (e.g.
//! [`SharedFileCredentials`](crate::aws::SharedFileCredentials)), asked only when needed.
//!
//! # Examples
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use ssm_session::aws::ApiClient;
//! use ssm_session::client::{self, SessionClient};
//! use ssm_session::net::TlsConfig;
//! use ssm_session::sigv4::Credentials;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let credentials = Credentials::new("AKIA…", "secret", None);
//! let api = ApiClient::new("http://127.0.0.1:8080", "us-east-1", credentials, TlsConfig::default())?;
//! let sessions = SessionClient::new(api);
//! let started = sessions.start_session("mi-0123456789abcdef0", None, BTreeMap::new()).await?;
//! let connection = sessions.connect(&started).await?;
//! let summary = client::run_terminal(connection, std::future::pending()).await?;
//! std::process::exit(summary.exit_code.unwrap_or(0));
//! # }
//! ```

pub mod exit;
pub mod plugin;
mod port;
mod terminal;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub use port::run_port_forwarding;

use std::future::Future;
pub use terminal::{run_standard_stream, run_terminal};

use crate::aws::{ApiCallError, ApiClient, HttpKms};
use crate::kms::KeyProvider;
use crate::net::{self, Connection, NetError, Options, TokenError};
use crate::session::{ClientConfig, PortKind, SessionType};

/// What `StartSession` (or `ResumeSession`) returned.
#[derive(Clone)]
pub struct StartedSession {
    /// The session id.
    pub session_id: String,
    /// The data-channel URL.
    pub stream_url: String,
    /// The single-use token for it (never logged).
    pub token_value: String,
    /// The target, as given.
    pub target: String,
}

impl fmt::Debug for StartedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartedSession")
            .field("session_id", &self.session_id)
            .field("stream_url", &self.stream_url)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// How a session went, for the summary line.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// The remote exit code, when the session reported one.
    pub exit_code: Option<i32>,
    /// How the connection ended.
    pub ending: net::Ending,
    /// Bytes sent (keystrokes or forwarded data).
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Wall time.
    pub duration: Duration,
}

impl SessionSummary {
    /// Why the session ended without the target reporting how it ended: the gateway's
    /// `channel_closed` text (revoked, terminated by someone else, timed out, the agent
    /// failed; an orderly end carries none) or the transport's failure.
    pub fn interrupted(&self) -> Option<String> {
        if self.exit_code.is_some() {
            return None;
        }
        match &self.ending {
            net::Ending::ChannelClosed { output } if !output.is_empty() => Some(output.clone()),
            net::Ending::Failed(error) => Some(error.to_string()),
            _ => None,
        }
    }

    /// The status a program should exit with: the remote exit code when there was one, 1
    /// when the session was [interrupted](Self::interrupted), else 0.
    pub fn exit_status(&self) -> i32 {
        match (self.exit_code, self.interrupted()) {
            (Some(code), _) => code,
            (None, Some(_)) => 1,
            (None, None) => 0,
        }
    }
}

impl SessionSummary {
    /// The status a client program should exit with: the remote exit code when there was
    /// one; [`ExitCode::ConnectionLost`](exit::ExitCode::ConnectionLost) (74) when the
    /// transport failed, [`ExitCode::Interrupted`](exit::ExitCode::Interrupted) (75) when the
    /// gateway ended the session first; else 0. Unlike [`exit_status`](Self::exit_status),
    /// an interrupted session does not look like a remote `exit 1`.
    pub fn program_exit_code(&self) -> i32 {
        match (self.exit_code, &self.ending) {
            (Some(code), _) => code,
            (None, _) if self.interrupted().is_none() => 0,
            (None, net::Ending::Failed(_)) => exit::ExitCode::ConnectionLost.code(),
            (None, _) => exit::ExitCode::Interrupted.code(),
        }
    }
}

impl fmt::Display for SessionSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session ended after {:.1} s: {} bytes sent, {} bytes received",
            self.duration.as_secs_f64(),
            self.bytes_sent,
            self.bytes_received
        )?;
        if let Some(code) = self.exit_code {
            write!(f, ", exit code {code}")?;
        }
        match &self.ending {
            // The ordinary ends (the target's `exit`, or this side's close) need no comment.
            net::Ending::ChannelClosed { output } if output.is_empty() => Ok(()),
            net::Ending::Closed => Ok(()),
            ending => write!(f, " ({ending})"),
        }
    }
}

/// What [`SessionClient::run_session`] tells the user of a port forward, worded as the
/// reference client prints them (on stdout, where tools wait for them).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The local listener is up.
    PortOpened {
        /// The local port (the handshake's `localPortNumber`, or the one chosen).
        port: u16,
        /// The session.
        session_id: String,
    },
    /// A local connection was forwarded.
    ConnectionAccepted {
        /// Where it goes, as the agent named it.
        destination: String,
    },
    /// The session is being ended after the stop signal.
    Exiting {
        /// The session.
        session_id: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::PortOpened { port, session_id } => write!(
                f,
                "Port {port} opened for sessionId {session_id}.\nWaiting for connections..."
            ),
            Notice::ConnectionAccepted { destination } => {
                write!(f, "Connection accepted for session [{destination}]")
            }
            Notice::Exiting { session_id } => {
                write!(f, "\nExiting session with sessionId: {session_id}.")
            }
        }
    }
}

/// Which sessions [`SessionClient::describe_sessions`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionState {
    /// Sessions now connected.
    #[default]
    Active,
    /// Sessions that have ended.
    History,
}

impl SessionState {
    /// The API's name: `Active` or `History`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Active => "Active",
            SessionState::History => "History",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SessionState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "Active" | "active" => Ok(SessionState::Active),
            "History" | "history" => Ok(SessionState::History),
            other => Err(format!("{other:?} is not Active or History")),
        }
    }
}

/// A `DescribeSessions` filter, as in the AWS API: `key` one of `InvokedAfter`,
/// `InvokedBefore`, `Target`, `Owner`, `Status`, `SessionId`. A gateway may ignore filters it
/// does not implement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionFilter {
    /// The filter's name.
    pub key: String,
    /// The value to match.
    pub value: String,
}

impl SessionFilter {
    /// The filter `key` = `value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> SessionFilter {
        SessionFilter {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// One session as `DescribeSessions` describes it (the AWS `Session` shape; fields a server
/// leaves out are `None`). It serializes back to the same JSON names.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct SessionDescription {
    /// The session id.
    pub session_id: String,
    /// The managed node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `Connected`, `Terminated`, `Failed`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When it started, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<f64>,
    /// When it ended, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<f64>,
    /// The ARN of the user who started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its session document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_name: Option<String>,
    /// The reason given at StartSession.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeSessionsPage {
    #[serde(default)]
    sessions: Vec<SessionDescription>,
    #[serde(default)]
    next_token: Option<String>,
}

/// Why [`SessionClient::run_session`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The data channel did not open.
    #[error(transparent)]
    Connect(#[from] NetError),
    /// The terminal or the local listener failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The handshake's `localPortNumber` is not a port.
    #[error("the session's localPortNumber {0:?} is not a port number")]
    LocalPort(String),
}

/// Session calls for one identity at one endpoint.
#[derive(Clone)]
pub struct SessionClient {
    api: ApiClient,
    kms: Arc<dyn KeyProvider>,
}

impl fmt::Debug for SessionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionClient")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl SessionClient {
    /// Calls through `api` (service `ssm`); KMS calls go to the same endpoint (a gateway's)
    /// unless [`SessionClient::key_provider`] says otherwise.
    pub fn new(api: ApiClient) -> SessionClient {
        let kms = Arc::new(HttpKms::new(api.clone()));
        SessionClient { api, kms }
    }

    /// Data keys of encrypted sessions come from `kms` (e.g. AWS KMS, or
    /// [`plugin::LegacyCliKms`]).
    pub fn key_provider(mut self, kms: Arc<dyn KeyProvider>) -> SessionClient {
        self.kms = kms;
        self
    }

    /// `StartSession` on `target` with `document` (default `SSM-SessionManagerRunShell`).
    pub async fn start_session(
        &self,
        target: &str,
        document: Option<&str>,
        parameters: BTreeMap<String, Vec<String>>,
    ) -> Result<StartedSession, ApiCallError> {
        let mut request = json!({ "Target": target });
        if let Some(document) = document {
            request["DocumentName"] = json!(document);
        }
        if !parameters.is_empty() {
            request["Parameters"] = json!(parameters);
        }
        let answer = self
            .api
            .call("ssm", "AmazonSSM.StartSession", &request)
            .await?;
        started(&answer, target)
    }

    /// `ResumeSession`: a fresh token for a live session.
    pub async fn resume_session(
        &self,
        session_id: &str,
        target: &str,
    ) -> Result<StartedSession, ApiCallError> {
        let answer = self
            .api
            .call(
                "ssm",
                "AmazonSSM.ResumeSession",
                &json!({ "SessionId": session_id }),
            )
            .await?;
        started(&answer, target)
    }

    /// `TerminateSession`.
    pub async fn terminate_session(&self, session_id: &str) -> Result<(), ApiCallError> {
        self.api
            .call(
                "ssm",
                "AmazonSSM.TerminateSession",
                &json!({ "SessionId": session_id }),
            )
            .await
            .map(drop)
    }

    /// `DescribeSessions`: the caller's sessions in `state`, narrowed by `filters`, every page
    /// of the answer (`NextToken`) gathered.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use ssm_session::aws::{ApiClient, SharedFileCredentials};
    /// use ssm_session::client::{SessionClient, SessionFilter, SessionState};
    /// use ssm_session::net::TlsConfig;
    /// use std::sync::Arc;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let credentials = Arc::new(SharedFileCredentials::new(None));
    /// let api = ApiClient::with_credentials(
    ///     "https://gateway.example:8443",
    ///     "us-east-1",
    ///     credentials,
    ///     TlsConfig::from_pem_file("dev-ca.pem")?,
    /// )?;
    /// let sessions = SessionClient::new(api);
    /// let on_one_host = [SessionFilter::new("Target", "mi-0123456789abcdef0")];
    /// for session in sessions.describe_sessions(SessionState::Active, &on_one_host).await? {
    ///     println!("{} {:?} since {:?}", session.session_id, session.status, session.start_date);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn describe_sessions(
        &self,
        state: SessionState,
        filters: &[SessionFilter],
    ) -> Result<Vec<SessionDescription>, ApiCallError> {
        let mut sessions = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let mut request = json!({ "State": state.as_str() });
            if !filters.is_empty() {
                request["Filters"] = json!(filters);
            }
            if let Some(token) = &next_token {
                request["NextToken"] = json!(token);
            }
            let answer = self
                .api
                .call("ssm", "AmazonSSM.DescribeSessions", &request)
                .await?;
            let page: DescribeSessionsPage = serde_json::from_value(answer).map_err(|error| {
                ApiCallError::Answer(format!("not a DescribeSessions answer: {error}"))
            })?;
            sessions.extend(page.sessions);
            match page.next_token.filter(|token| !token.is_empty()) {
                // A server that repeats its token would otherwise keep this loop going.
                Some(token) if next_token.as_ref() != Some(&token) => next_token = Some(token),
                _ => return Ok(sessions),
            }
        }
    }

    /// Opens the data channel of `started`, resuming through `ResumeSession` after transport
    /// loss and asking the key provider for encrypted sessions.
    pub async fn connect(&self, started: &StartedSession) -> Result<Connection, NetError> {
        let config = ClientConfig::new(&started.session_id, &started.target);
        let resume = self.clone();
        let (id, target) = (started.session_id.clone(), started.target.clone());
        let token_source = move || -> net::TokenFuture {
            let resume = resume.clone();
            let (id, target) = (id.clone(), target.clone());
            Box::pin(async move {
                match resume.resume_session(&id, &target).await {
                    Ok(started) => Ok(started.token_value),
                    // Refused, or no credentials to ask with: retrying cannot help.
                    Err(
                        error @ (ApiCallError::Service { .. } | ApiCallError::Credentials { .. }),
                    ) => Err(TokenError::Final(Box::new(error))),
                    Err(error) => Err(TokenError::Retry(Box::new(error))),
                }
            })
        };
        let options = Options::default()
            .tls(self.api.tls().clone())
            .key_provider(self.kms.clone())
            .token_source(Arc::new(token_source));
        net::connect(&started.stream_url, &started.token_value, config, options).await
    }

    /// Connects and runs the session the way its document asks, as the reference client does:
    /// shell-type sessions on this terminal ([`run_terminal`]); local port forwarding on
    /// `127.0.0.1:<localPortNumber>` from the handshake (any free port when absent), telling
    /// `notice` what the user should see; other port sessions (SSH) on stdin/stdout
    /// ([`run_standard_stream`]).
    ///
    /// When `stop` completes (the programs pass SIGTERM, SIGHUP and SIGINT) the session is
    /// ended, not abandoned: the close tells the agent the client left, and if that close is
    /// not acknowledged (the transport is down) `TerminateSession` ends it at the gateway;
    /// should that fail too, the gateway ends it once the client has been gone for its resume
    /// window.
    pub async fn run_session(
        &self,
        started: &StartedSession,
        stop: impl Future<Output = ()>,
        notice: impl FnMut(Notice) + Send + 'static,
    ) -> Result<SessionSummary, RunError> {
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stopped.clone();
        let stop = async move {
            stop.await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let mut summary = self.run_until(started, stop, notice).await?;
        if !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(summary);
        }
        tracing::info!(session_id = %started.session_id, "ended on request");
        if matches!(
            summary.ending,
            net::Ending::DrainTimedOut { .. } | net::Ending::Failed(_)
        ) && let Err(error) = self.terminate_session(&started.session_id).await
        {
            // The agent did not hear of the close, nor the gateway of the end.
            tracing::warn!(
                session_id = %started.session_id,
                %error,
                "could not end the session: the gateway ends it after its resume window"
            );
        }
        // Ended as asked: no interruption to report.
        summary.ending = net::Ending::Closed;
        Ok(summary)
    }

    async fn run_until(
        &self,
        started: &StartedSession,
        stop: impl Future<Output = ()>,
        mut notice: impl FnMut(Notice) + Send + 'static,
    ) -> Result<SessionSummary, RunError> {
        let connection = self.connect(started).await?;
        let info = connection.info();
        let property = |name: &str| {
            info.properties
                .as_ref()
                .and_then(|properties| properties.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if info.session_type != SessionType::Port {
            return Ok(run_terminal(connection, stop).await?);
        }
        if PortKind::from_properties(info.properties.as_ref()) != PortKind::LocalPortForwarding {
            return Ok(run_standard_stream(connection, stop).await?);
        }
        let local_port = match property("localPortNumber").filter(|port| !port.is_empty()) {
            Some(port) => port.parse().map_err(|_| RunError::LocalPort(port))?,
            None => 0,
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local_port)).await?;
        let session_id = started.session_id.clone();
        notice(Notice::PortOpened {
            port: listener.local_addr()?.port(),
            session_id: session_id.clone(),
        });
        let notice = Arc::new(std::sync::Mutex::new(notice));
        let on_stream = notice.clone();
        let stop = async move {
            stop.await;
            (crate::net::runtime::lock(&notice))(Notice::Exiting { session_id });
        };
        let summary = run_port_forwarding(connection, listener, stop, move |event| {
            if !event.closed {
                (crate::net::runtime::lock(&on_stream))(Notice::ConnectionAccepted {
                    destination: event.destination,
                });
            }
        })
        .await?;
        Ok(summary)
    }
}

fn started(answer: &Value, target: &str) -> Result<StartedSession, ApiCallError> {
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiCallError::Answer(format!("the answer has no {name}")))
    };
    Ok(StartedSession {
        session_id: field("SessionId")?,
        stream_url: field("StreamUrl")?,
        token_value: field("TokenValue")?,
        target: target.to_owned(),
    })
}

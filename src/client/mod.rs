//! The user side: `StartSession` / `ResumeSession` / `TerminateSession` against a gateway,
//! then the session itself as an interactive terminal ([`run_terminal`]) or a local port
//! forwarder ([`run_port_forwarding`]).
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
//! let summary = client::run_terminal(connection).await?;
//! std::process::exit(summary.exit_code.unwrap_or(0));
//! # }
//! ```

mod port;
mod terminal;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub use port::run_port_forwarding;
pub use terminal::{run_standard_stream, run_terminal};

use crate::aws::{ApiCallError, ApiClient, HttpKms};
use crate::net::{self, Connection, NetError, Options, TokenError};
use crate::session::ClientConfig;

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
        write!(f, " ({})", self.ending)
    }
}

/// Session calls for one identity at one endpoint.
#[derive(Debug, Clone)]
pub struct SessionClient {
    api: ApiClient,
}

impl SessionClient {
    /// Calls through `api` (service `ssm`; KMS calls go to the same endpoint).
    pub fn new(api: ApiClient) -> SessionClient {
        SessionClient { api }
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

    /// Opens the data channel of `started`, resuming through `ResumeSession` after transport
    /// loss and asking the endpoint's KMS for encrypted sessions.
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
                    Err(error @ ApiCallError::Service { .. }) => {
                        Err(TokenError::Final(error.to_string()))
                    }
                    Err(error) => Err(TokenError::Retry(error.to_string())),
                }
            })
        };
        let options = Options::default()
            .tls(self.api.tls().clone())
            .key_provider(Arc::new(HttpKms::new(self.api.clone())))
            .token_source(Arc::new(token_source));
        net::connect(&started.stream_url, &started.token_value, config, options).await
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

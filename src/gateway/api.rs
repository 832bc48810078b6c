//! The JSON API: `AmazonSSM.*` session calls, `TrentService.*` KMS calls, and the agents'
//! `CreateDataChannel`. Every call is authenticated, authorised and audited; errors use the
//! AWS JSON 1.1 shape (`{"__type": …, "message": …}`) so that the CLI and SDKs show them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{ApiError, ApiRequest, Call, Caller, Signed, parse, served};
use super::random_hex;
use super::service::Service;
use super::sessions::NewSession;
use crate::audit::{EventKind, Record};
use crate::control::{ControlMessage, StartSession};
use crate::document::SessionType;
use crate::policy::{document_arn, session_arn, target_arn};
use crate::session::Role;

/// The content type of every API answer.
pub(super) const JSON: &str = "application/x-amz-json-1.1";

const DEFAULT_DOCUMENT: &str = "SSM-SessionManagerRunShell";

/// What [`Service::handle_api`] answers.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
    /// The request's signature verified.
    pub(super) authenticated: bool,
}

/// Whether a call starts or resumes a session, mints a token or uses a key: refused while
/// the audit log cannot be written ([`super::AuditFailure::Refuse`]). Reading state and
/// `TerminateSession`, which only takes access away, are not.
fn needs_audit(request: &ApiRequest) -> bool {
    if request.path.starts_with(crate::net::relay::PATH_PREFIX) {
        return true;
    }
    !matches!(
        request.header("x-amz-target").unwrap_or(""),
        "AmazonSSM.TerminateSession"
            | "AmazonSSM.DescribeSessions"
            | "AmazonSSM.DescribeInstanceInformation"
            | "TrentService.DescribeKey"
    )
}

/// An AWS JSON 1.1 error body.
pub(super) fn error_body(code: &str, message: &str) -> Vec<u8> {
    json!({"__type": code, "message": message})
        .to_string()
        .into_bytes()
}

impl Service {
    /// Answers one API request: status, body, and whether the caller authenticated (only
    /// authenticated connections are kept alive). Every call is audited, refusals logged;
    /// refusals before authentication are audited rate-limited per source
    /// ([`Service::audit_unauthenticated`]), so that junk cannot flood the log.
    pub(super) fn handle_api(&self, request: &ApiRequest, peer: SocketAddr) -> Answer {
        let mut call = Call::new(peer);
        match self.dispatch(request, &mut call) {
            Ok(body) => {
                call.record.decision = Some("allow".into());
                // Fail-closed: no unaudited success for a call that needs the audit log; a
                // session it started ends at once.
                let started = match call.record.action.as_deref() {
                    Some("ssm:StartSession") => call.record.session_id.clone(),
                    _ => None,
                };
                if !self.try_audit(call.record) && needs_audit(request) && self.audit_fails_closed()
                {
                    if let Some(session_id) = started {
                        self.end(
                            &session_id,
                            crate::audit::EndReason::Revoked,
                            None,
                            "the gateway cannot write its audit log",
                        );
                    }
                    let error = Service::unaudited();
                    return Answer {
                        status: error.status,
                        body: error_body(error.code, &error.message),
                        authenticated: true,
                    };
                }
                Answer {
                    status: 200,
                    body: body.to_string().into_bytes(),
                    authenticated: true,
                }
            }
            Err(error) => {
                let authenticated = call.record.principal.is_some();
                let principal = call.record.principal.as_deref().unwrap_or("-");
                let action = call.record.action.as_deref().unwrap_or("-");
                // Unauthenticated refusals at debug only (SECURITY.md): anyone can cause them,
                // and the audit log keeps them, rate-limited.
                match authenticated {
                    true => tracing::info!(
                        %peer, principal, action, code = error.code, reason = %error.message,
                        "API call refused"
                    ),
                    false => tracing::debug!(
                        %peer, principal, action, code = error.code, reason = %error.message,
                        "API call refused"
                    ),
                }
                call.record.decision = Some("deny".into());
                call.record.reason = Some(format!("{}: {}", error.code, error.message));
                match authenticated {
                    true => self.audit(call.record),
                    false => self.audit_unauthenticated(call.record, peer),
                }
                Answer {
                    status: error.status,
                    body: error_body(error.code, &error.message),
                    authenticated,
                }
            }
        }
    }

    fn dispatch(&self, request: &ApiRequest, call: &mut Call) -> Result<Value, ApiError> {
        served(&request.path)?;
        if request.method != "POST" {
            return Err(ApiError::new(
                405,
                "UnknownOperationException",
                "only POST requests are served",
            ));
        }
        let signed = self.authenticate(request)?;
        let caller = &signed.signer;
        call.record.principal = Some(caller.name().to_owned());
        if needs_audit(request) {
            self.refuse_if_unaudited()?;
        }

        if let Some(session_id) = request.path.strip_prefix(crate::net::relay::PATH_PREFIX) {
            call.record.action = Some("ssmmessages:CreateDataChannel".into());
            call.record.session_id = Some(session_id.to_owned());
            return self.create_data_channel(&signed, session_id);
        }
        let target = request.header("x-amz-target").unwrap_or("");
        call.record.action = Some(
            target
                .replace("AmazonSSM.", "ssm:")
                .replace("TrentService.", "kms:"),
        );
        let body: Value = match request.body.is_empty() {
            true => json!({}),
            false => serde_json::from_slice(&request.body).map_err(|error| {
                ApiError::new(
                    400,
                    "SerializationException",
                    format!("the body is not JSON: {error}"),
                )
            })?,
        };
        match target {
            "AmazonSSM.StartSession" => self.start_session(&signed, body, request, call),
            "AmazonSSM.ResumeSession" => self.resume_session(&signed, body, request, call),
            "AmazonSSM.TerminateSession" => self.terminate_session(caller, body, call),
            "AmazonSSM.DescribeSessions" => self.describe_sessions(caller, body),
            "AmazonSSM.DescribeInstanceInformation" => self.describe_instances(caller),
            "TrentService.GenerateDataKey" => self.generate_data_key(caller, body, call),
            "TrentService.Decrypt" => self.decrypt(caller, body, call),
            "TrentService.Encrypt" => self.encrypt(caller, body, call),
            "TrentService.DescribeKey" => self.describe_key(caller, body, call),
            other => Err(ApiError::new(
                400,
                "UnknownOperationException",
                format!("operation {other:?} is not served by this gateway"),
            )),
        }
    }

    fn start_session(
        &self,
        signed: &Signed<Caller>,
        body: Value,
        request: &ApiRequest,
        call: &mut Call,
    ) -> Result<Value, ApiError> {
        let name = signed.signer.user()?;
        self.refuse_if_stopping()?;
        let input: StartSessionInput = parse(body)?;
        let document_name = input
            .document_name
            .clone()
            .unwrap_or_else(|| DEFAULT_DOCUMENT.into());
        call.record.target = Some(input.target.clone());
        call.record.document = Some(document_name.clone());
        let auth = self.auth();
        let document = auth.documents().get(&document_name).ok_or_else(|| {
            ApiError::new(
                400,
                "InvalidDocument",
                format!("document {document_name} does not exist"),
            )
        })?;
        let resources = [
            target_arn(&self.region, &self.account, &input.target),
            document_arn(&self.region, &self.account, &document_name),
        ];
        self.authorize(name, "ssm:StartSession", &resources, call)?;
        self.start_rate
            .take(name, std::time::Instant::now())
            .map_err(|wait| {
                ApiError::new(
                    400,
                    "ThrottlingException",
                    format!(
                        "{name} started more than {} sessions in a burst (refilled at {} a minute): retry in {:.1} s",
                        self.quotas.start_session_burst,
                        self.quotas.start_sessions_per_minute,
                        wait.as_secs_f64().min(3600.0)
                    ),
                )
            })?;
        let resolved = document
            .resolve(&input.parameters)
            .map_err(|error| ApiError::new(400, "InvalidParameters", error.to_string()))?;
        match self.agents.presence(&input.target) {
            Some(presence) if presence.online() => {}
            Some(presence) => {
                return Err(ApiError::new(
                    400,
                    "TargetNotConnected",
                    format!(
                        "{} is not connected; its agent was last seen {}",
                        input.target,
                        crate::audit::rfc3339_ms(presence.last_seen_ms)
                    ),
                ));
            }
            None => {
                return Err(ApiError::new(
                    400,
                    "TargetNotConnected",
                    format!(
                        "{} is not connected: no agent with that id has connected since the gateway started",
                        input.target
                    ),
                ));
            }
        }

        let session_id = format!("{name}-{}", random_hex(17));
        call.record.session_id = Some(session_id.clone());
        let owner_arn = format!("arn:aws:iam::{}:user/{name}", self.account);
        // The account's session preferences choose run-as for every session type, as in AWS:
        // the agent runs command documents as this user too.
        let account_preferences = auth
            .documents()
            .get(DEFAULT_DOCUMENT)
            .and_then(|preferences| preferences.preferences().ok());
        let run_as = account_preferences
            .as_ref()
            .filter(|preferences| preferences.run_as_enabled)
            .and_then(|preferences| preferences.run_as_default_user.clone());
        // Shell documents carry their own idle timeout; port and command documents have none,
        // and the account's applies, as in AWS.
        let idle_timeout = match resolved.session_type {
            SessionType::Port | SessionType::NonInteractiveCommands => account_preferences
                .as_ref()
                .map_or(resolved.preferences.idle_session_timeout, |preferences| {
                    preferences.idle_session_timeout
                }),
            _ => resolved.preferences.idle_session_timeout,
        };
        let content =
            document.agent_message_content(&resolved, &session_id, run_as.as_deref(), &owner_arn);
        let stats = self.hub.register(&session_id);
        let source = call
            .record
            .source
            .as_deref()
            .and_then(|source| source.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let inserted = self.sessions.insert(
            NewSession {
                id: &session_id,
                owner: name,
                target: &input.target,
                document: &document_name,
                session_type: document.session_type(),
                // The agent keeps these recordings itself (agent::recorder): chunks that an
                // older agent still streams are not written in plaintext here.
                encrypted: resolved.session_type != SessionType::Port
                    && resolved.preferences.kms_key_id.is_some(),
                idle_timeout,
                source,
                reason: input.reason.clone(),
                stats,
            },
            self.quotas.max_sessions_per_principal,
        );
        let Some(span) = inserted else {
            self.hub.end(&session_id, "");
            return Err(ApiError::new(
                400,
                "ThrottlingException",
                format!(
                    "{name} already has {} live sessions, the most one principal may have: end one first",
                    self.quotas.max_sessions_per_principal
                ),
            ));
        };
        if let Err(error) = self.claim(signed) {
            self.discard(&session_id);
            return Err(error);
        }
        let mut started = Record::new(EventKind::SessionStart);
        started.principal = Some(name.to_owned());
        started.source = call.record.source.clone();
        started.target = Some(input.target.clone());
        started.document = Some(document_name.clone());
        started.session_id = Some(session_id.clone());
        // What a command session runs is part of the record, with the caller's reason.
        let command = resolved
            .command
            .as_ref()
            .map(|command| format!("command: {command}"));
        started.detail = match (input.reason, command) {
            (Some(reason), Some(command)) => Some(format!("{reason}; {command}")),
            (reason, command) => reason.or(command),
        };
        // Fail-closed: written before the agent hears of the session, so that no agent ever
        // runs a session the audit log does not have.
        if !self.try_audit(started) && self.audit_fails_closed() {
            self.discard(&session_id);
            return Err(Service::unaudited());
        }
        let start = StartSession {
            task_id: session_id.clone(),
            content: content.to_string(),
            topic: "interactive_shell".into(),
            schema_version: 1,
        };
        if !self
            .agents
            .send(&input.target, ControlMessage::StartSession(start))
        {
            self.end(
                &session_id,
                crate::audit::EndReason::AgentLost,
                None,
                "the agent stopped reading its control channel",
            );
            return Err(ApiError::new(
                400,
                "TargetNotConnected",
                format!("{} did not accept the session", input.target),
            ));
        }
        let token = self.tokens.issue(&session_id, Role::Client);
        tracing::info!(parent: &span, document = %document_name, %source, "session started");
        Ok(json!({
            "SessionId": session_id,
            "StreamUrl": self.stream_url(request, &session_id),
            "TokenValue": token,
        }))
    }

    /// Sessions started during shutdown would end at once: refuse them plainly.
    fn refuse_if_stopping(&self) -> Result<(), ApiError> {
        match self.stopping.is_cancelled() {
            true => Err(ApiError::new(
                503,
                "ServiceUnavailable",
                "the gateway is shutting down",
            )),
            false => Ok(()),
        }
    }

    /// `ws(s)://<the host the caller used>/v1/data-channel/<id>?role=publish_subscribe`.
    fn stream_url(&self, request: &ApiRequest, session_id: &str) -> String {
        let host = request.header("host").unwrap_or("localhost");
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{host}{}{session_id}?role=publish_subscribe",
            crate::net::relay::PATH_PREFIX
        )
    }

    /// Resume and Terminate: the policy must allow `action` on the session *and* the caller
    /// must be the principal who started it. Ownership is checked here, never left to a
    /// resource pattern (`session/${aws:username}-*` also matches `dev-admin-…` for `dev`);
    /// other principals' sessions are ended only by the operator, through the configuration
    /// (a reload revokes what it no longer allows).
    fn own_live_session(
        &self,
        name: &str,
        action: &str,
        session_id: &str,
        call: &mut Call,
    ) -> Result<(), ApiError> {
        call.record.session_id = Some(session_id.to_owned());
        self.authorize(
            name,
            action,
            &[session_arn(&self.region, &self.account, session_id)],
            call,
        )?;
        match self.sessions.owner_and_target(session_id) {
            Some((owner, _)) if owner != name => Err(ApiError::new(
                400,
                "AccessDeniedException",
                format!(
                    "User: arn:aws:iam::{}:user/{name} is not authorized to perform: {action} on session {session_id}: only the principal who started a session may resume or terminate it",
                    self.account
                ),
            )),
            Some((_, target)) => {
                call.record.target = Some(target);
                Ok(())
            }
            None => Err(ApiError::new(
                400,
                "DoesNotExistException",
                format!("session {session_id} is not running (it ended or never existed)"),
            )),
        }
    }

    fn resume_session(
        &self,
        signed: &Signed<Caller>,
        body: Value,
        request: &ApiRequest,
        call: &mut Call,
    ) -> Result<Value, ApiError> {
        let name = signed.signer.user()?;
        self.refuse_if_stopping()?;
        let input: SessionIdInput = parse(body)?;
        self.own_live_session(name, "ssm:ResumeSession", &input.session_id, call)?;
        self.claim(signed)?;
        let token = self.tokens.issue(&input.session_id, Role::Client);
        if let Some(span) = self.sessions.span(&input.session_id) {
            tracing::info!(parent: &span, "session resumed");
        }
        Ok(json!({
            "SessionId": input.session_id,
            "StreamUrl": self.stream_url(request, &input.session_id),
            "TokenValue": token,
        }))
    }

    fn terminate_session(
        &self,
        caller: &Caller,
        body: Value,
        call: &mut Call,
    ) -> Result<Value, ApiError> {
        let name = caller.user()?;
        let input: SessionIdInput = parse(body)?;
        self.own_live_session(name, "ssm:TerminateSession", &input.session_id, call)?;
        self.end(
            &input.session_id,
            crate::audit::EndReason::Terminated,
            None,
            &format!("Session terminated by {name}"),
        );
        Ok(json!({ "SessionId": input.session_id }))
    }

    fn describe_sessions(&self, caller: &Caller, body: Value) -> Result<Value, ApiError> {
        let name = caller.user()?;
        let input: DescribeSessionsInput = parse(body)?;
        let active = match input.state.as_str() {
            "Active" => true,
            "History" => false,
            other => {
                return Err(ApiError::new(
                    400,
                    "ValidationException",
                    format!("State must be Active or History, not {other:?}"),
                ));
            }
        };
        let auth = self.auth();
        let sessions: Vec<Value> = self
            .sessions
            .describe(active)
            .into_iter()
            // Only one's own sessions, as with Resume and Terminate.
            .filter(|summary| summary.owner == name)
            .filter(|summary| {
                let arn = session_arn(&self.region, &self.account, &summary.id);
                auth.authorize(name, "ssm:DescribeSessions", &[arn]).is_ok()
            })
            .map(|summary| {
                let mut session = json!({
                    "SessionId": summary.id,
                    "Target": summary.target,
                    "Status": summary.status,
                    "StartDate": summary.started_ms as f64 / 1000.0,
                    "DocumentName": summary.document,
                    "Owner": format!("arn:aws:iam::{}:user/{}", self.account, summary.owner),
                });
                if let Some(ended) = summary.ended_ms {
                    session["EndDate"] = json!(ended as f64 / 1000.0);
                }
                if let Some(reason) = summary.reason {
                    session["Reason"] = json!(reason);
                }
                session
            })
            .collect();
        Ok(json!({ "Sessions": sessions }))
    }

    fn describe_instances(&self, caller: &Caller) -> Result<Value, ApiError> {
        let name = caller.user()?;
        let auth = self.auth();
        let list: Vec<Value> = self
            .agents
            .all()
            .into_iter()
            .filter(|(id, _)| {
                let arn = target_arn(&self.region, &self.account, id);
                auth.authorize(name, "ssm:DescribeInstanceInformation", &[arn])
                    .is_ok()
            })
            .map(|(id, presence)| {
                json!({
                    "InstanceId": id,
                    "PingStatus": if presence.online() { "Online" } else { "ConnectionLost" },
                    "LastPingDateTime": presence.last_seen_ms as f64 / 1000.0,
                    "AgentVersion": presence.version,
                    "PlatformType": "Linux",
                    "PlatformName": presence.platform,
                    "ResourceType": "ManagedInstance",
                    "IPAddress": presence.address.map(|a| a.ip().to_string()).unwrap_or_default(),
                })
            })
            .collect();
        Ok(json!({ "InstanceInformationList": list }))
    }

    fn create_data_channel(
        &self,
        signed: &Signed<Caller>,
        session_id: &str,
    ) -> Result<Value, ApiError> {
        let Caller::Agent(agent_id) = &signed.signer else {
            return Err(ApiError::new(
                403,
                "AccessDeniedException",
                "only agents open the agent side of a data channel",
            ));
        };
        match self.sessions.owner_and_target(session_id) {
            Some((_, target)) if &target == agent_id => {
                self.claim(signed)?;
                Ok(json!({
                    "TokenValue": self.tokens.issue(session_id, Role::Agent),
                }))
            }
            Some(_) => Err(ApiError::new(
                403,
                "AccessDeniedException",
                format!("session {session_id} does not run on {agent_id}"),
            )),
            None => Err(ApiError::new(
                400,
                "DoesNotExistException",
                format!("session {session_id} is not running"),
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartSessionInput {
    target: String,
    #[serde(default)]
    document_name: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionIdInput {
    session_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeSessionsInput {
    state: String,
}

//! The JSON API: `AmazonSSM.*` session calls, `TrentService.*` KMS calls, and the agents'
//! `CreateDataChannel`. Every call is authenticated, authorised and audited; errors use the
//! AWS JSON 1.1 shape (`{"__type": …, "message": …}`) so that the CLI and SDKs show them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{ApiError, Caller};
use super::{Inner, kms, random_hex, sessions, wall_ms};
use crate::audit::{EventKind, Record};
use crate::control::{ControlMessage, StartSession};
use crate::net::http::HttpRequest;
use crate::policy::{document_arn, session_arn, target_arn};
use crate::session::Role;

/// Headers of every API answer.
pub(crate) const JSON: [(&str, &str); 1] = [("Content-Type", "application/x-amz-json-1.1")];

const DEFAULT_DOCUMENT: &str = "SSM-SessionManagerRunShell";

/// An AWS JSON 1.1 error body.
pub(crate) fn error_body(code: &str, message: &str) -> Vec<u8> {
    json!({"__type": code, "message": message})
        .to_string()
        .into_bytes()
}

/// Answers one API request: status and body.
pub(crate) async fn handle(
    inner: &Arc<Inner>,
    request: &HttpRequest,
    peer: SocketAddr,
) -> (u16, Vec<u8>) {
    let mut call = Call {
        record: Record::new(EventKind::ApiCall),
    };
    call.record.source = Some(peer.to_string());
    let result = dispatch(inner, request, &mut call);
    match result {
        Ok(body) => {
            call.record.decision = Some("allow".into());
            inner.audit(call.record);
            (200, body.to_string().into_bytes())
        }
        Err(error) => {
            call.record.decision = Some("deny".into());
            call.record.reason = Some(format!("{}: {}", error.code, error.message));
            inner.audit(call.record);
            (error.status, error_body(error.code, &error.message))
        }
    }
}

/// The audit record of the call being answered, filled in as facts become known.
pub(super) struct Call {
    pub(super) record: Record,
}

fn dispatch(inner: &Inner, request: &HttpRequest, call: &mut Call) -> Result<Value, ApiError> {
    if request.method != "POST" {
        return Err(ApiError::new(
            405,
            "UnknownOperationException",
            "only POST requests are served",
        ));
    }
    let auth = inner.auth();
    let caller = auth.verify(request, wall_ms() / 1000)?;
    call.record.principal = Some(caller.name().to_owned());

    if let Some(session_id) = request.path.strip_prefix(crate::net::relay::PATH_PREFIX) {
        call.record.action = Some("ssmmessages:CreateDataChannel".into());
        call.record.session_id = Some(session_id.to_owned());
        return create_data_channel(inner, &caller, session_id);
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
        "AmazonSSM.StartSession" => start_session(inner, &caller, body, request, call),
        "AmazonSSM.ResumeSession" => resume_session(inner, &caller, body, request, call),
        "AmazonSSM.TerminateSession" => terminate_session(inner, &caller, body, call),
        "AmazonSSM.DescribeSessions" => describe_sessions(inner, &caller, body),
        "AmazonSSM.DescribeInstanceInformation" => describe_instances(inner, &caller),
        "TrentService.GenerateDataKey" => kms::generate_data_key(inner, &caller, body, call),
        "TrentService.Decrypt" => kms::decrypt(inner, &caller, body, call),
        "TrentService.Encrypt" => kms::encrypt(inner, &caller, body, call),
        "TrentService.DescribeKey" => kms::describe_key(inner, &caller, body, call),
        other => Err(ApiError::new(
            400,
            "UnknownOperationException",
            format!("operation {other:?} is not served by this gateway"),
        )),
    }
}

pub(super) fn parse<T: for<'de> Deserialize<'de>>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body)
        .map_err(|error| ApiError::new(400, "ValidationException", error.to_string()))
}

pub(super) fn user(caller: &Caller) -> Result<&str, ApiError> {
    match caller {
        Caller::User(name) => Ok(name),
        Caller::Agent(id) => Err(ApiError::new(
            400,
            "AccessDeniedException",
            format!("agent identity {id} may not call session APIs"),
        )),
    }
}

pub(super) fn authorize(
    inner: &Inner,
    name: &str,
    action: &str,
    resources: &[String],
    call: &mut Call,
) -> Result<(), ApiError> {
    match inner
        .auth()
        .authorize(&inner.region, &inner.account, name, action, resources)
    {
        Ok(statement) => {
            call.record.reason = Some(statement);
            Ok(())
        }
        Err(why) => Err(ApiError::new(
            400,
            "AccessDeniedException",
            format!(
                "User: arn:aws:iam::{}:user/{name} is not authorized to perform: {action}: {why}",
                inner.account
            ),
        )),
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

fn start_session(
    inner: &Inner,
    caller: &Caller,
    body: Value,
    request: &HttpRequest,
    call: &mut Call,
) -> Result<Value, ApiError> {
    let name = user(caller)?;
    let input: StartSessionInput = parse(body)?;
    let document_name = input
        .document_name
        .clone()
        .unwrap_or_else(|| DEFAULT_DOCUMENT.into());
    call.record.target = Some(input.target.clone());
    call.record.document = Some(document_name.clone());
    let auth = inner.auth();
    let document = auth.documents().get(&document_name).ok_or_else(|| {
        ApiError::new(
            400,
            "InvalidDocument",
            format!("document {document_name} does not exist"),
        )
    })?;
    let resources = [
        target_arn(&inner.region, &inner.account, &input.target),
        document_arn(&inner.region, &inner.account, &document_name),
    ];
    authorize(inner, name, "ssm:StartSession", &resources, call)?;
    let resolved = document
        .resolve(&input.parameters)
        .map_err(|error| ApiError::new(400, "InvalidParameters", error.to_string()))?;
    match inner.agents.presence(&input.target) {
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
    let owner_arn = format!("arn:aws:iam::{}:user/{name}", inner.account);
    let content = document.agent_message_content(&resolved, &session_id, None, &owner_arn);
    let stats = inner.hub.register(&session_id);
    inner.sessions.insert(
        &session_id,
        name,
        &input.target,
        &document_name,
        call.record
            .source
            .as_deref()
            .and_then(|source| source.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        input.reason.clone(),
        stats,
    );
    let start = StartSession {
        task_id: session_id.clone(),
        content: content.to_string(),
        topic: "interactive_shell".into(),
        schema_version: 1,
    };
    if !inner
        .agents
        .send(&input.target, ControlMessage::StartSession(start))
    {
        sessions::end(
            inner,
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
    let token = inner.tokens.issue(&session_id, Role::Client);
    let mut started = Record::new(EventKind::SessionStart);
    started.principal = Some(name.to_owned());
    started.source = call.record.source.clone();
    started.target = Some(input.target.clone());
    started.document = Some(document_name);
    started.session_id = Some(session_id.clone());
    started.detail = input.reason;
    inner.audit(started);
    Ok(json!({
        "SessionId": session_id,
        "StreamUrl": stream_url(inner, request, &session_id),
        "TokenValue": token,
    }))
}

/// `ws(s)://<the host the caller used>/v1/data-channel/<id>?role=publish_subscribe`.
fn stream_url(inner: &Inner, request: &HttpRequest, session_id: &str) -> String {
    let host = request.header("host").unwrap_or("localhost");
    let scheme = if inner.tls { "wss" } else { "ws" };
    format!(
        "{scheme}://{host}{}{session_id}?role=publish_subscribe",
        crate::net::relay::PATH_PREFIX
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionIdInput {
    session_id: String,
}

fn own_live_session(
    inner: &Inner,
    name: &str,
    action: &str,
    session_id: &str,
    call: &mut Call,
) -> Result<(), ApiError> {
    call.record.session_id = Some(session_id.to_owned());
    authorize(
        inner,
        name,
        action,
        &[session_arn(&inner.region, &inner.account, session_id)],
        call,
    )?;
    match inner.sessions.owner_and_target(session_id) {
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
    inner: &Inner,
    caller: &Caller,
    body: Value,
    request: &HttpRequest,
    call: &mut Call,
) -> Result<Value, ApiError> {
    let name = user(caller)?;
    let input: SessionIdInput = parse(body)?;
    own_live_session(inner, name, "ssm:ResumeSession", &input.session_id, call)?;
    let token = inner.tokens.issue(&input.session_id, Role::Client);
    Ok(json!({
        "SessionId": input.session_id,
        "StreamUrl": stream_url(inner, request, &input.session_id),
        "TokenValue": token,
    }))
}

fn terminate_session(
    inner: &Inner,
    caller: &Caller,
    body: Value,
    call: &mut Call,
) -> Result<Value, ApiError> {
    let name = user(caller)?;
    let input: SessionIdInput = parse(body)?;
    own_live_session(inner, name, "ssm:TerminateSession", &input.session_id, call)?;
    sessions::end(
        inner,
        &input.session_id,
        crate::audit::EndReason::Terminated,
        None,
        &format!("Session terminated by {name}"),
    );
    Ok(json!({ "SessionId": input.session_id }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeSessionsInput {
    state: String,
}

fn describe_sessions(inner: &Inner, caller: &Caller, body: Value) -> Result<Value, ApiError> {
    let name = user(caller)?;
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
    let auth = inner.auth();
    let sessions: Vec<Value> = inner
        .sessions
        .describe(active)
        .into_iter()
        .filter(|summary| {
            let arn = session_arn(&inner.region, &inner.account, &summary.id);
            auth.authorize(
                &inner.region,
                &inner.account,
                name,
                "ssm:DescribeSessions",
                &[arn],
            )
            .is_ok()
        })
        .map(|summary| {
            let mut session = json!({
                "SessionId": summary.id,
                "Target": summary.target,
                "Status": summary.status,
                "StartDate": summary.started_ms as f64 / 1000.0,
                "DocumentName": summary.document,
                "Owner": format!("arn:aws:iam::{}:user/{}", inner.account, summary.owner),
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

fn describe_instances(inner: &Inner, caller: &Caller) -> Result<Value, ApiError> {
    let name = user(caller)?;
    let auth = inner.auth();
    let list: Vec<Value> = inner
        .agents
        .all()
        .into_iter()
        .filter(|(id, _)| {
            auth.authorize(
                &inner.region,
                &inner.account,
                name,
                "ssm:DescribeInstanceInformation",
                &[target_arn(&inner.region, &inner.account, id)],
            )
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
    inner: &Inner,
    caller: &Caller,
    session_id: &str,
) -> Result<Value, ApiError> {
    let Caller::Agent(agent_id) = caller else {
        return Err(ApiError::new(
            403,
            "AccessDeniedException",
            "only agents open the agent side of a data channel",
        ));
    };
    match inner.sessions.owner_and_target(session_id) {
        Some((_, target)) if &target == agent_id => Ok(json!({
            "TokenValue": inner.tokens.issue(session_id, Role::Agent),
        })),
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

//! Typed views of a resolved document: shell preferences (`inputs`), the port target and the
//! command (`properties`), and the agent's side of the PROTOCOL.md §11.2 start message.

use std::time::Duration;

use serde_json::{Map, Value};

use super::params::scalar_text;
use super::{Document, DocumentError, Parameters, SessionType};

/// AWS's default `idleSessionTimeout`: 20 minutes.
pub const DEFAULT_IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// AWS's upper bound for `idleSessionTimeout`, in minutes.
const MAX_IDLE_MINUTES: u32 = 60;
/// AWS's upper bound for `maxSessionDuration`, in minutes (24 hours).
const MAX_DURATION_MINUTES: u32 = 1440;
/// Fraction digits accepted in a minutes value (nanosecond-of-a-minute precision is plenty).
const MAX_FRACTION_DIGITS: usize = 9;

/// The session preferences a document's `inputs` carry (PROTOCOL.md §10.4) that this crate acts on.
///
/// Timeouts are minutes as in AWS (`"20"`), with one extension: fractional minutes such as
/// `"0.05"` (3 s) are accepted so tests can use short timeouts. AWS's official agent accepts
/// whole minutes only. Numbers (`60`) are accepted as well as strings.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ssm_session::document::Document;
///
/// let doc = Document::from_json(
///     "ShortShell",
///     r#"{"schemaVersion": "1.0", "sessionType": "Standard_Stream",
///         "inputs": {"idleSessionTimeout": "0.05", "maxSessionDuration": "90",
///                    "runAsEnabled": true, "runAsDefaultUser": "ops"}}"#,
/// )?;
/// let prefs = doc.preferences()?;
/// assert_eq!(prefs.idle_session_timeout, Duration::from_secs(3));
/// assert_eq!(prefs.max_session_duration, Some(Duration::from_secs(90 * 60)));
/// assert_eq!(prefs.run_as_default_user.as_deref(), Some("ops"));
/// # Ok::<(), ssm_session::document::DocumentError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShellPreferences {
    /// `kmsKeyId`: encrypt the data channel with this key (PROTOCOL.md §8); empty means off.
    pub kms_key_id: Option<String>,
    /// `runAsEnabled`: run the shell as the principal's `RunAsUser` or `runAsDefaultUser`.
    pub run_as_enabled: bool,
    /// `runAsDefaultUser`; empty means none.
    pub run_as_default_user: Option<String>,
    /// `idleSessionTimeout`: end the session after this long without client input. Default 20
    /// minutes; at most 60 minutes.
    pub idle_session_timeout: Duration,
    /// `maxSessionDuration`: end the session this long after it started; `None` (absent or
    /// empty) means no limit. At most 1440 minutes.
    pub max_session_duration: Option<Duration>,
    /// `shellProfile.linux`: written into the shell, followed by a newline, before any input.
    pub shell_profile_linux: Option<String>,
}

impl Default for ShellPreferences {
    /// AWS's defaults: no encryption, no run-as, 20-minute idle timeout, no duration limit.
    fn default() -> Self {
        ShellPreferences {
            kms_key_id: None,
            run_as_enabled: false,
            run_as_default_user: None,
            idle_session_timeout: DEFAULT_IDLE_SESSION_TIMEOUT,
            max_session_duration: None,
            shell_profile_linux: None,
        }
    }
}

impl ShellPreferences {
    /// Reads `inputs` (absent or `null` gives the defaults).
    pub(super) fn from_inputs(inputs: Option<&Value>) -> Result<Self, DocumentError> {
        let empty = Map::new();
        let fields = match inputs {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                return Err(input_error(
                    "inputs",
                    other,
                    "an object of session preferences",
                ));
            }
        };
        let idle_session_timeout = minutes(fields, "idleSessionTimeout", MAX_IDLE_MINUTES)?
            .unwrap_or(DEFAULT_IDLE_SESSION_TIMEOUT);
        let shell_profile_linux = match fields.get("shellProfile") {
            None | Some(Value::Null) => None,
            Some(Value::Object(profile)) => non_empty_string(profile, "linux", "shellProfile.")?,
            Some(other) => {
                return Err(input_error(
                    "shellProfile",
                    other,
                    "an object {\"windows\": \"…\", \"linux\": \"…\"}",
                ));
            }
        };
        Ok(ShellPreferences {
            kms_key_id: non_empty_string(fields, "kmsKeyId", "")?,
            run_as_enabled: boolean(fields.get("runAsEnabled"))
                .ok_or_else(|| input_error_at(fields, "runAsEnabled", "true or false"))?,
            run_as_default_user: non_empty_string(fields, "runAsDefaultUser", "")?,
            idle_session_timeout,
            max_session_duration: minutes(fields, "maxSessionDuration", MAX_DURATION_MINUTES)?,
            shell_profile_linux,
        })
    }
}

fn input_error(input: &str, value: &Value, expected: &str) -> DocumentError {
    DocumentError::Input {
        input: input.to_owned(),
        value: value.to_string(),
        expected: expected.to_owned(),
    }
}

fn input_error_at(fields: &Map<String, Value>, key: &str, expected: &str) -> DocumentError {
    input_error(key, fields.get(key).unwrap_or(&Value::Null), expected)
}

/// A string input, `None` when absent, `null` or empty.
fn non_empty_string(
    fields: &Map<String, Value>,
    key: &str,
    prefix: &str,
) -> Result<Option<String>, DocumentError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone()).filter(|t| !t.is_empty())),
        Some(other) => Err(input_error(&format!("{prefix}{key}"), other, "a string")),
    }
}

/// The agent's boolean: JSON `true`/`false` or the strings `"true"`/`"false"` (any case);
/// absent, `null` and `""` are false.
fn boolean(value: Option<&Value>) -> Option<bool> {
    match value {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(text)) if text.is_empty() || text.eq_ignore_ascii_case("false") => {
            Some(false)
        }
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Some(true),
        Some(_) => None,
    }
}

/// A minutes input: `None` when absent, `null` or empty; otherwise more than 0 and at most `max`.
fn minutes(
    fields: &Map<String, Value>,
    key: &str,
    max: u32,
) -> Result<Option<Duration>, DocumentError> {
    let text = match fields.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => scalar_text(value).filter(|_| !value.is_boolean()),
    };
    if text.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Ok(None);
    }
    text.and_then(|text| parse_minutes(text.trim(), max))
        .map(Some)
        .ok_or_else(|| {
            input_error_at(
                fields,
                key,
                &format!(
                    "minutes from 1 to {max} as a string such as \"20\" (fractions such as \
                     \"0.5\" are also accepted)"
                ),
            )
        })
}

/// `"20"`, `"0.05"`, `"1440.0"`: a plain decimal, exact to the nanosecond, in `(0, max]`.
fn parse_minutes(text: &str, max: u32) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 6
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > MAX_FRACTION_DIGITS
        || (text.contains('.') && fraction.is_empty())
    {
        return None;
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let scaled = whole.parse::<u128>().ok()? * scale + fraction.parse::<u128>().unwrap_or(0);
    let nanos = scaled * 60_000_000_000 / scale;
    let limit = u128::from(max) * 60_000_000_000;
    (nanos > 0 && nanos <= limit)
        .then(|| u64::try_from(nanos).ok().map(Duration::from_nanos))
        .flatten()
}

pub use crate::session::PortKind;

/// Where a `Port` session connects, read from its resolved `properties` (PROTOCOL.md §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortTarget {
    /// `host`; `None` (absent or empty) means `localhost` on the agent.
    pub host: Option<String>,
    /// `portNumber`, 1–65535.
    pub port: u16,
    /// `localPortNumber`; `None` (absent, empty or `0`) lets the client's OS choose.
    pub local_port: Option<u16>,
    /// `localUnixSocket`, when `localConnectionType` is `unix`: the client listens there
    /// instead of on a TCP port.
    pub local_unix_socket: Option<String>,
    /// From `type`.
    pub kind: PortKind,
}

impl PortTarget {
    pub(super) fn from_properties(properties: &Value) -> Result<Self, DocumentError> {
        let empty = Map::new();
        let fields = properties.as_object().unwrap_or(&empty);
        let port = match property_text(fields, "portNumber") {
            Some(text) => text.trim().parse::<u16>().ok().filter(|&p| p != 0),
            None => None,
        }
        .ok_or_else(|| property_error(fields, "portNumber", "a port number from 1 to 65535"))?;
        let local_port = match property_text(fields, "localPortNumber") {
            None => None,
            Some(text) if text.trim().is_empty() => None,
            Some(text) => Some(text.trim().parse::<u16>().map_err(|_| {
                property_error(fields, "localPortNumber", "a port number from 0 to 65535")
            })?),
        }
        .filter(|&p| p != 0);
        let local_unix_socket = match property_text(fields, "localConnectionType").as_deref() {
            Some("unix") => Some(
                property_text(fields, "localUnixSocket")
                    .filter(|path| !path.is_empty())
                    .ok_or_else(|| {
                        property_error(
                            fields,
                            "localUnixSocket",
                            "a socket path (localConnectionType is unix)",
                        )
                    })?,
            ),
            _ => None,
        };
        let kind = PortKind::from_properties(Some(properties));
        Ok(PortTarget {
            host: property_text(fields, "host").filter(|h| !h.is_empty()),
            port,
            local_port,
            local_unix_socket,
            kind,
        })
    }
}

fn property_text(fields: &Map<String, Value>, key: &str) -> Option<String> {
    fields.get(key).and_then(scalar_text)
}

fn property_error(fields: &Map<String, Value>, key: &str, expected: &str) -> DocumentError {
    DocumentError::Property {
        property: key.to_owned(),
        value: fields.get(key).unwrap_or(&Value::Null).to_string(),
        expected: expected.to_owned(),
    }
}

/// The `linux` entry of a command document's resolved `properties` (PROTOCOL.md §10.4): the command
/// line and `runAsElevated`. This crate's agent runs on Linux, so the `windows` and `macos`
/// entries travel to the agent but are not read.
fn command_from_properties(properties: &Value) -> Result<(String, bool), DocumentError> {
    let linux = properties.get("linux");
    let Some(fields) = linux.and_then(Value::as_object) else {
        return Err(DocumentError::Property {
            property: "linux".into(),
            value: linux.unwrap_or(&Value::Null).to_string(),
            expected: "an object {\"commands\": \"…\"} (the command for Linux agents)".into(),
        });
    };
    let error = |key: &str, expected: &str| DocumentError::Property {
        property: format!("linux.{key}"),
        value: fields.get(key).unwrap_or(&Value::Null).to_string(),
        expected: expected.to_owned(),
    };
    let commands = match fields.get("commands") {
        Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
        _ => return Err(error("commands", "a non-empty command line")),
    };
    let elevated = boolean(fields.get("runAsElevated"))
        .ok_or_else(|| error("runAsElevated", "true or false"))?;
    Ok((commands, elevated))
}

/// A document with its parameters applied: what the gateway sends and the agent runs.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
/// use ssm_session::document::{DocumentStore, PortKind};
///
/// let store = DocumentStore::builtin();
/// let doc = store.get("AWS-StartPortForwardingSessionToRemoteHost").expect("built in");
/// let parameters = BTreeMap::from([
///     ("host".to_owned(), vec!["db.internal".to_owned()]),
///     ("portNumber".to_owned(), vec!["5432".to_owned()]),
/// ]);
/// let resolved = doc.resolve(&parameters)?;
/// let target = resolved.port.expect("a Port document");
/// assert_eq!(target.host.as_deref(), Some("db.internal"));
/// assert_eq!((target.port, target.local_port), (5432, None));
/// assert_eq!(target.kind, PortKind::LocalPortForwarding);
/// assert_eq!(resolved.properties["host"], "db.internal");
/// # Ok::<(), ssm_session::document::DocumentError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResolvedSession {
    /// The document's `sessionType`.
    pub session_type: SessionType,
    /// The whole document content with parameters substituted in `properties` and `inputs`:
    /// the PROTOCOL.md §11.2 `DocumentContent`.
    pub content: Value,
    /// The resolved `properties` (JSON `null` when the document has none, as for shells).
    pub properties: Value,
    /// Every parameter's values: those given, and defaults for the rest.
    pub parameters: Parameters,
    /// From `inputs`; AWS's defaults when the document has none.
    pub preferences: ShellPreferences,
    /// For `Port` sessions.
    pub port: Option<PortTarget>,
    /// For `InteractiveCommands` and `NonInteractiveCommands`: `properties.linux.commands`.
    pub command: Option<String>,
    /// `properties.linux.runAsElevated` of command documents: run as root, skipping run-as.
    pub run_as_elevated: bool,
}

impl ResolvedSession {
    /// Reads the typed views out of already-resolved `content`.
    pub(super) fn from_content(
        session_type: SessionType,
        content: Value,
        parameters: Parameters,
    ) -> Result<Self, DocumentError> {
        let preferences = ShellPreferences::from_inputs(content.get("inputs"))?;
        let properties = content.get("properties").cloned().unwrap_or(Value::Null);
        let port = match session_type {
            SessionType::Port => Some(PortTarget::from_properties(&properties)?),
            _ => None,
        };
        let (command, run_as_elevated) = match session_type {
            SessionType::InteractiveCommands | SessionType::NonInteractiveCommands => {
                let (command, elevated) = command_from_properties(&properties)?;
                (Some(command), elevated)
            }
            _ => (None, false),
        };
        Ok(ResolvedSession {
            session_type,
            content,
            properties,
            parameters,
            preferences,
            port,
            command,
            run_as_elevated,
        })
    }
}

/// The agent's reading of an `interactive_shell` message's `Content` (PROTOCOL.md §11.2): the
/// message's own fields around the [`ResolvedSession`] it carries.
///
/// Lenient as the Go agent: key case is ignored, unknown keys are skipped, `DocumentContent`
/// may be an object or a string holding one, and `Parameters` values may be strings or lists.
/// The content is taken as already resolved by the gateway: placeholders are **not**
/// substituted again, so a parameter value that contains `{{ … }}` stays literal.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
/// use ssm_session::document::{AgentSessionRequest, DocumentStore, SessionType};
///
/// let store = DocumentStore::builtin();
/// let doc = store.get("AWS-StartSSHSession").expect("built in");
/// let resolved = doc.resolve(&BTreeMap::new())?;
/// let content =
///     doc.agent_message_content(&resolved, "alice-0123", None, "arn:aws:iam::1:user/alice");
///
/// let request = AgentSessionRequest::from_json(&content.to_string())?;
/// assert_eq!(request.session_id, "alice-0123");
/// assert_eq!(request.session.session_type, SessionType::Port);
/// assert_eq!(request.session.port.as_ref().map(|p| p.port), Some(22));
/// assert_eq!(request.session, resolved);
/// # Ok::<(), ssm_session::document::DocumentError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AgentSessionRequest {
    /// `DocumentName`.
    pub document_name: String,
    /// `SessionId`.
    pub session_id: String,
    /// `RunAsUser`: the principal's run-as user; `None` when empty.
    pub run_as_user: Option<String>,
    /// `SessionOwner`: the principal's ARN.
    pub session_owner: String,
    /// The session it asks for: `DocumentContent` (as received, already resolved by the
    /// gateway) and `Parameters`, read into the same typed views the gateway resolved.
    pub session: ResolvedSession,
}

impl AgentSessionRequest {
    /// Parses the `Content` string of an `interactive_shell` message.
    pub fn from_json(text: &str) -> Result<Self, DocumentError> {
        let value: Value = serde_json::from_str(text).map_err(|e| DocumentError::AgentRequest {
            problem: format!("not valid JSON ({e})"),
        })?;
        Self::from_value(&value)
    }

    /// As [`from_json`](Self::from_json), from parsed JSON.
    pub fn from_value(value: &Value) -> Result<Self, DocumentError> {
        let Value::Object(fields) = value else {
            return Err(request_error("the content must be a JSON object"));
        };
        let get = |key: &str| {
            fields.get(key).or_else(|| {
                fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
        };
        let text = |key: &str| match get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(request_error(&format!("{key} must be a string"))),
        };
        let document_name = text("DocumentName")?;
        let session_id = text("SessionId")?;
        if session_id.is_empty() {
            return Err(request_error("SessionId is missing"));
        }
        let content = match get("DocumentContent") {
            Some(content @ Value::Object(_)) => content.clone(),
            Some(Value::String(text)) => {
                serde_json::from_str(text).map_err(|e| DocumentError::Json {
                    document: document_name.clone(),
                    error: e.to_string(),
                })?
            }
            _ => return Err(request_error("DocumentContent is missing or not an object")),
        };
        let document = Document::from_value(&document_name, content)?;
        let parameters = match get("Parameters") {
            None | Some(Value::Null) => Parameters::new(),
            Some(Value::Object(map)) => request_parameters(map)?,
            Some(_) => return Err(request_error("Parameters must be an object")),
        };
        let session = ResolvedSession::from_content(
            document.session_type(),
            document.into_content(),
            parameters,
        )?;
        Ok(AgentSessionRequest {
            document_name,
            session_id,
            run_as_user: Some(text("RunAsUser")?).filter(|u| !u.is_empty()),
            session_owner: text("SessionOwner")?,
            session,
        })
    }
}

fn request_error(problem: &str) -> DocumentError {
    DocumentError::AgentRequest {
        problem: problem.to_owned(),
    }
}

fn request_parameters(map: &Map<String, Value>) -> Result<Parameters, DocumentError> {
    map.iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| {
            let values = match value {
                Value::Array(items) => items.iter().map(scalar_text).collect(),
                scalar => scalar_text(scalar).map(|text| vec![text]),
            };
            values.map(|v| (name.clone(), v)).ok_or_else(|| {
                request_error(&format!(
                    "Parameters.{name} must be a string or a list of strings"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_exact_decimals_within_bounds() {
        assert_eq!(parse_minutes("20", 60), Some(Duration::from_secs(1200)));
        assert_eq!(parse_minutes("0.05", 60), Some(Duration::from_secs(3)));
        assert_eq!(parse_minutes("60.0", 60), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_minutes("0.000000001", 60),
            Some(Duration::from_nanos(60))
        );
        for bad in [
            "0", "0.0", "60.01", "61", "-1", "1e3", ".5", "5.", "NaN", "1 0",
        ] {
            assert_eq!(parse_minutes(bad, 60), None, "{bad}");
        }
        assert_eq!(
            parse_minutes("1440", 1440),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_minutes("9999999", 1440), None);
    }
}

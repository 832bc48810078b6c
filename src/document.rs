//! Session documents: which kind of session a StartSession request starts and with what
//! settings (PROTOCOL.md §9.1, §10, §11.2).
//!
//! A StartSession request names a document (default [`DEFAULT_DOCUMENT`]) and passes
//! `Parameters` as a map of name → list of strings. The gateway looks the document up in a
//! [`DocumentStore`] (the AWS built-ins plus custom `<Name>.json` files), calls
//! [`Document::resolve`] — defaults filled in, unknown names and values breaking
//! `allowedPattern`/`allowedValues` refused, `{{ name }}` placeholders substituted — and sends
//! the agent [`Document::agent_message_content`]. The agent reads that back with
//! [`AgentSessionRequest::from_json`] and gets the same typed views: the [`SessionType`], the
//! [`ShellPreferences`] from `inputs`, the [`PortTarget`] or the command from `properties`.
//!
//! Everything here is pure apart from [`DocumentStore::load_dir`], which reads files.
//!
//! # Examples
//!
//! ```
//! use std::collections::BTreeMap;
//! use ssm_session::document::{DocumentStore, SessionType};
//!
//! let store = DocumentStore::builtin();
//! let doc = store.get("AWS-StartInteractiveCommand").expect("built in");
//! let parameters = BTreeMap::from([("command".to_owned(), vec!["top -b -n 1".to_owned()])]);
//! let resolved = doc.resolve(&parameters)?;
//! assert_eq!(resolved.session_type, SessionType::InteractiveCommands);
//! assert_eq!(resolved.command.as_deref(), Some("top -b -n 1"));
//!
//! // What the gateway puts in the `interactive_shell` message's `Content`.
//! let content = doc.agent_message_content(&resolved, "s-1", Some("ops"), "arn:aws:iam::1:user/a");
//! assert_eq!(content["DocumentContent"]["properties"]["linux"]["commands"], "top -b -n 1");
//! # Ok::<(), ssm_session::document::DocumentError>(())
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value};

mod error;
mod params;
mod pattern;
mod session;
mod store;

pub use error::{DocumentError, ParameterRule};
pub use params::{ParameterDefinition, ParameterType};
pub use pattern::AllowedPattern;
pub use session::{
    AgentSessionRequest, DEFAULT_IDLE_SESSION_TIMEOUT, PortKind, PortTarget, ResolvedSession,
    ShellPreferences,
};
pub use store::{BUILTIN_DOCUMENTS, DocumentStore};

/// StartSession parameters in the AWS shape: each name maps to a list of strings.
pub type Parameters = BTreeMap<String, Vec<String>>;

/// The document a StartSession request without `DocumentName` uses: an interactive shell.
pub const DEFAULT_DOCUMENT: &str = "SSM-SessionManagerRunShell";

/// The only session document schema version AWS defines (and the agent accepts).
const SCHEMA_VERSION: &str = "1.0";

pub use crate::session::SessionType;

/// One session document: its name, its content exactly as written (sent to the agent), and
/// the parts this crate reads, checked once when the document is loaded.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
/// use ssm_session::document::{Document, DocumentError, SessionType};
///
/// let doc = Document::from_json(
///     "Postgres",
///     r#"{
///       "schemaVersion": "1.0",
///       "sessionType": "Port",
///       "parameters": {
///         "localPortNumber": {"type": "String", "allowedPattern": "^[0-9]{1,5}$", "default": "5432"}
///       },
///       "properties": {"portNumber": "5432", "type": "LocalPortForwarding",
///                      "localPortNumber": "{{localPortNumber}}"}
///     }"#,
/// )?;
/// assert_eq!(doc.session_type(), SessionType::Port);
///
/// let refused = doc.resolve(&BTreeMap::from([("portNumber".into(), vec!["22".into()])]));
/// assert!(matches!(refused, Err(DocumentError::UnknownParameter { .. })));
/// # Ok::<(), DocumentError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Document {
    name: String,
    content: Value,
    session_type: SessionType,
    parameters: BTreeMap<String, ParameterDefinition>,
}

impl Document {
    /// Parses and checks a document: valid name, `schemaVersion` `"1.0"`, a known
    /// `sessionType`, well-formed `parameters` whose defaults satisfy their own rules,
    /// `properties` with `portNumber` (Port) or `linux.commands` (command types), usable
    /// `inputs`, and — when every parameter has a default — a successful resolution.
    pub fn from_json(name: &str, text: &str) -> Result<Self, DocumentError> {
        let content = serde_json::from_str(text).map_err(|e| DocumentError::Json {
            document: name.to_owned(),
            error: e.to_string(),
        })?;
        Self::from_value(name, content)
    }

    /// As [`from_json`](Self::from_json), from parsed JSON.
    pub fn from_value(name: &str, content: Value) -> Result<Self, DocumentError> {
        if !store::valid_document_name(name) {
            return Err(DocumentError::InvalidName {
                name: name.to_owned(),
            });
        }
        let shape = |problem: &str| DocumentError::Shape {
            document: name.to_owned(),
            problem: problem.to_owned(),
        };
        let Value::Object(fields) = &content else {
            return Err(shape("the content must be a JSON object"));
        };
        match fields.get("schemaVersion") {
            Some(Value::String(version)) if version == SCHEMA_VERSION => {}
            Some(other) => {
                return Err(shape(&format!(
                    "schemaVersion must be \"1.0\" (found {other}); session documents only \
                     have that version"
                )));
            }
            None => {
                return Err(shape(
                    "schemaVersion is missing; add \"schemaVersion\": \"1.0\"",
                ));
            }
        }
        if fields
            .get("description")
            .is_some_and(|d| !d.is_string() && !d.is_null())
        {
            return Err(shape("description must be a string"));
        }
        let session_type = match fields.get("sessionType") {
            Some(Value::String(text)) => {
                SessionType::from_wire(text).ok_or_else(|| DocumentError::UnknownSessionType {
                    document: name.to_owned(),
                    found: text.clone(),
                })?
            }
            Some(_) => return Err(shape("sessionType must be a string such as \"Port\"")),
            None => {
                return Err(shape(
                    "sessionType is missing; use Standard_Stream, InteractiveCommands, \
                     NonInteractiveCommands or Port",
                ));
            }
        };
        let parameters = match fields.get("parameters") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(definitions)) => definitions
                .iter()
                .map(|(parameter, definition)| {
                    ParameterDefinition::from_value(name, parameter, definition)
                        .map(|d| (parameter.clone(), d))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(shape(
                    "parameters must be an object of parameter definitions",
                ));
            }
        };
        let inputs = match fields.get("inputs") {
            None | Some(Value::Null) => None,
            Some(inputs @ Value::Object(_)) => Some(inputs),
            Some(_) => return Err(shape("inputs must be an object of session preferences")),
        };
        if let Some(inputs) = inputs.filter(|inputs| !has_placeholder(inputs)) {
            ShellPreferences::from_inputs(Some(inputs))?;
        }
        check_properties(session_type, fields.get("properties")).map_err(|p| shape(&p))?;
        let document = Document {
            name: name.to_owned(),
            content,
            session_type,
            parameters,
        };
        if document.parameters.values().all(|p| p.default.is_some()) {
            document.resolve(&Parameters::new()).map_err(|e| {
                shape(&format!(
                    "with its default parameters the document is unusable: {e}"
                ))
            })?;
        }
        Ok(document)
    }

    /// The document's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The content exactly as loaded.
    pub fn content(&self) -> &Value {
        &self.content
    }

    /// `sessionType`.
    pub fn session_type(&self) -> SessionType {
        self.session_type
    }

    /// `description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.content.get("description").and_then(Value::as_str)
    }

    /// The `parameters` definitions, by name.
    pub fn parameters(&self) -> &BTreeMap<String, ParameterDefinition> {
        &self.parameters
    }

    /// The session preferences in `inputs`, as written (defaults when absent). Fails when an
    /// input is invalid or still a `{{ placeholder }}`; [`ResolvedSession::preferences`] has
    /// the values after substitution.
    pub fn preferences(&self) -> Result<ShellPreferences, DocumentError> {
        ShellPreferences::from_inputs(self.content.get("inputs"))
    }

    /// Applies StartSession `parameters`: refuses names the document does not define, fills in
    /// defaults, checks every value against its definition (type, `allowedValues`,
    /// `allowedPattern`, `minChars`/`maxChars`, `minItems`/`maxItems`), substitutes
    /// `{{ name }}` in `properties` and `inputs`, and reads the typed views.
    pub fn resolve(&self, parameters: &Parameters) -> Result<ResolvedSession, DocumentError> {
        let resolved = params::resolve_values(&self.parameters, parameters)?;
        let values: BTreeMap<String, Value> = resolved
            .iter()
            .filter_map(|(name, values)| {
                let definition = self.parameters.get(name)?;
                Some((name.clone(), definition.to_json(values)))
            })
            .collect();
        let mut content = self.content.clone();
        if let Value::Object(fields) = &mut content {
            for key in ["properties", "inputs"] {
                if let Some(section) = fields.get_mut(key) {
                    *section = params::substitute(section, &values);
                }
            }
        }
        ResolvedSession::from_content(self.session_type, content, resolved)
    }

    /// The `Content` of the `interactive_shell` message that starts `resolved` on an agent
    /// (PROTOCOL.md §11.2): `DocumentName`, `DocumentContent` (with substituted properties),
    /// `SessionId`, `Parameters` (strings, or lists for `StringList`), `RunAsUser` (empty when
    /// `None`) and `SessionOwner`. Keys come out sorted; order carries no meaning.
    pub fn agent_message_content(
        &self,
        resolved: &ResolvedSession,
        session_id: &str,
        run_as_user: Option<&str>,
        session_owner: &str,
    ) -> Value {
        let parameters: Map<String, Value> = resolved
            .parameters
            .iter()
            .map(|(name, values)| {
                let value = match self.parameters.get(name) {
                    Some(definition) => definition.to_json(values),
                    None => Value::from(values.clone()),
                };
                (name.clone(), value)
            })
            .collect();
        let mut message = Map::new();
        message.insert("DocumentName".into(), Value::from(self.name.as_str()));
        message.insert("DocumentContent".into(), resolved.content.clone());
        message.insert("SessionId".into(), Value::from(session_id));
        message.insert("Parameters".into(), Value::Object(parameters));
        message.insert("RunAsUser".into(), Value::from(run_as_user.unwrap_or("")));
        message.insert("SessionOwner".into(), Value::from(session_owner));
        Value::Object(message)
    }

    /// The content, for callers that are done with the typed parts.
    fn into_content(self) -> Value {
        self.content
    }
}

/// Whether any string inside `value` still holds a `{{` placeholder.
fn has_placeholder(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains("{{"),
        Value::Array(items) => items.iter().any(has_placeholder),
        Value::Object(fields) => fields.values().any(has_placeholder),
        _ => false,
    }
}

/// The `properties` each session type cannot work without, present (values are checked when
/// resolved).
fn check_properties(session_type: SessionType, properties: Option<&Value>) -> Result<(), String> {
    let properties = match properties {
        None | Some(Value::Null) => None,
        Some(properties @ Value::Object(_)) => Some(properties),
        Some(_) => return Err("properties must be an object".into()),
    };
    match session_type {
        SessionType::StandardStream => Ok(()),
        SessionType::Port => match properties.and_then(|p| p.get("portNumber")) {
            Some(_) => Ok(()),
            None => Err("a Port document needs properties.portNumber, e.g. \
                         \"properties\": {\"portNumber\": \"{{ portNumber }}\"}"
                .into()),
        },
        SessionType::InteractiveCommands | SessionType::NonInteractiveCommands => {
            match properties
                .and_then(|p| p.get("linux"))
                .and_then(|l| l.get("commands"))
            {
                Some(_) => Ok(()),
                None => Err("a command document needs properties.linux.commands, e.g. \
                             \"properties\": {\"linux\": {\"commands\": \"{{ command }}\"}}"
                    .into()),
            }
        }
    }
}
